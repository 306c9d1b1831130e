"""Values of the read side: run filters, keyset cursors, time bounds and worker pools.

Pure functions: the API layer parses query strings with them, services pass the results to the
query repository. Every bad value raises :class:`InputInvalid` naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiki.platform.domain.errors import InputInvalid
from aiki.platform.domain.run_states import ALL_STATUSES

DEFAULT_POOL = "default"
"""The pool of runs started without ``pool=`` and of workers that name no pools (stored as NULL)."""

MAX_POOL_LENGTH = 100
_CURSOR_PREFIX = "r1:"
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a list or a bulk action applies to; unset fields do not filter."""

    statuses: tuple[str, ...] = ()
    workflow: str | None = None
    version: str | None = None
    reference_id: str | None = None
    schedule_id: str | None = None
    parent_run_id: str | None = None
    pool: str | None = None
    created_after: int | None = None
    created_before: int | None = None

    @property
    def reference_prefix(self) -> str | None:
        """Runs a schedule starts carry reference ids ``schedule:{id}:...``."""
        return None if self.schedule_id is None else f"schedule:{self.schedule_id}:"

    def is_empty(self) -> bool:
        return not self.statuses and all(
            value is None
            for value in (
                self.workflow,
                self.version,
                self.reference_id,
                self.schedule_id,
                self.parent_run_id,
                self.pool,
                self.created_after,
                self.created_before,
            )
        )


def parse_statuses(values: Iterable[str] | None, name: str = "status") -> tuple[str, ...]:
    """Statuses from repeated and/or comma-separated values, in first-seen order, without repeats."""
    seen: dict[str, None] = {}
    for value in values or ():
        for part in value.split(","):
            status = part.strip()
            if not status:
                continue
            if status not in ALL_STATUSES:
                valid = ", ".join(sorted(ALL_STATUSES))
                raise InputInvalid(f"{name}: unknown status {status!r} (valid: {valid})", field=name)
            seen[status] = None
    return tuple(seen)


def parse_time(value: str | int | None, name: str) -> int | None:
    """Milliseconds since the epoch from an integer or an ISO 8601 string (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, int):
        if value < 0:
            raise InputInvalid(f"{name}: must not be negative", field=name)
        return value
    text = value.strip()
    if not text:
        raise InputInvalid(f"{name}: empty value", field=name)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InputInvalid(
            f"{name}: {value!r} is neither milliseconds since the epoch nor an ISO 8601 time", field=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def check_time_range(after: int | None, before: int | None) -> None:
    if after is not None and before is not None and after >= before:
        raise InputInvalid("created_after must be earlier than created_before", field="created_after")


def encode_cursor(run_id: str) -> str:
    """An opaque keyset cursor: the id of the last run of a page (ids are unique and time-ordered)."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + run_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The run id a cursor from :func:`encode_cursor` holds; InputInvalid naming ``cursor`` otherwise."""
    if cursor is None or cursor == "":
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    run_id = text[len(_CURSOR_PREFIX) :] if text.startswith(_CURSOR_PREFIX) else ""
    if not _ID.match(run_id):
        raise InputInvalid("cursor: not a cursor this server issued (use next_cursor as returned)", field="cursor")
    return run_id


def normalize_pool(value: str | None, name: str = "pool") -> str | None:
    """A run's pool as stored: None for the default pool, else the name as given."""
    if value is None or value == DEFAULT_POOL:
        return None
    if not value.strip() or len(value) > MAX_POOL_LENGTH:
        raise InputInvalid(f"{name}: a pool name must be 1 to {MAX_POOL_LENGTH} non-blank characters", field=name)
    return value


def normalize_pools(values: Iterable[str] | None, name: str = "pools") -> list[str]:
    """A worker's pools: no pools means the default pool; names are checked and deduplicated."""
    pools: dict[str, None] = {}
    for value in values or ():
        stored = normalize_pool(value, name)
        pools[DEFAULT_POOL if stored is None else stored] = None
    return list(pools) or [DEFAULT_POOL]
