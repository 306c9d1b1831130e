"""What every service needs: the database, wake-ups, settings, and the version catalogue cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from aiki.platform.db.catalog_repo import CatalogRepository
from aiki.platform.db.engine import Database
from aiki.platform.db.wakeups import WakeHub
from aiki.platform.domain.errors import InputInvalid, NotFound, WorkflowNotFound
from aiki.platform.domain.settings import Settings
from aiki.platform.domain.values import Run
from aiki.platform.secret_box import SecretBox
from aiki.platform.services.handoff import ClaimExchange
from aiki.platform.services.url_guard import Resolver

# A worker re-registering a version with a new schema reaches other processes within this time.
_VERSION_CACHE_TTL_S = 5.0
# Runs that just ended, as their ending write returned them: a terminal run never changes again, so
# a result long-poll woken by that write answers from here instead of reading the row back.
_TERMINAL_VIEWS = 4096


@dataclass(slots=True)
class VersionInfo:
    input_validator: Any | None
    event_validators: dict[str, Any | None] | None
    """None: the version was registered without schemas (by a push endpoint): any event is taken."""
    timeout_ms: int | None = None
    loaded_at: float = field(default_factory=time.monotonic)


def _validator(schema: Any) -> Any | None:
    if schema is None:
        return None
    return Draft202012Validator(schema)


def check_payload(validator: Any | None, value: Any, what: str) -> None:
    """Validate a decoded JSON value against a version's schema; raise InputInvalid naming the field."""
    if validator is None:
        return
    error = best_match(validator.iter_errors(value))
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            path = f"{path}.{missing[0]}"
            message = f"{missing[0]!r} is required"
    raise InputInvalid(f"{what} is invalid at {path}: {message}", field=path)


class Services:
    """The shared state of the core's use cases within one server process."""

    def __init__(self, db: Database, settings: Settings | None = None, hub: WakeHub | None = None) -> None:
        self.db = db
        self.settings = settings or Settings()
        self.hub = hub or WakeHub()
        self.claims = ClaimExchange()
        self._versions: dict[tuple[str, str, str], VersionInfo] = {}
        self._terminal: dict[tuple[str, str], Run] = {}
        self._started: dict[tuple[str, str], tuple[int, Run]] = {}
        self.clock: Callable[[], int] | None = None
        # Seals push endpoints' signing secrets; None when the server has no secret key (embedded
        # without IAM), and then endpoints cannot be registered.
        self.secret_box: SecretBox | None = None
        # Resolves push endpoints' host names for the SSRF guard; None: the system resolver.
        self.url_resolver: Resolver | None = None

    def remember_terminal(self, namespace_id: str, view: Run) -> None:
        """Keep the view of a run that just reached a terminal status (it never changes again)."""
        self._terminal[(namespace_id, view.id)] = view
        if len(self._terminal) > _TERMINAL_VIEWS:
            del self._terminal[next(iter(self._terminal))]

    def terminal_view(self, namespace_id: str, run_id: str) -> Run | None:
        return self._terminal.get((namespace_id, run_id))

    def remember_started(self, namespace_id: str, view: Run, since: int) -> None:
        """Keep the view of a run this process just inserted, with the version its ``run:`` key
        had before the insert (``since``).

        Until that key is notified the run is known to be as inserted (every status change
        notifies it), so a result long-poll arriving right after the start need not read it.
        """
        self._started[(namespace_id, view.id)] = (since, view)
        if len(self._started) > _TERMINAL_VIEWS:
            del self._started[next(iter(self._started))]

    def started_view(self, namespace_id: str, run_id: str) -> tuple[int, Run] | None:
        """The view kept by :meth:`remember_started` while its ``run:`` key is not notified since."""
        kept = self._started.get((namespace_id, run_id))
        if kept is None:
            return None
        if kept[0] != self.hub.version(f"run:{run_id}"):
            del self._started[(namespace_id, run_id)]
            return None
        return kept

    def forget_version(self, namespace_id: str, workflow: str, version: str) -> None:
        self._versions.pop((namespace_id, workflow, version), None)

    async def version(self, namespace_id: str, workflow: str, version: str) -> VersionInfo:
        key = (namespace_id, workflow, version)
        info = self._versions.get(key)
        if info is not None and time.monotonic() - info.loaded_at < _VERSION_CACHE_TTL_S:
            return info
        async with self.db.engine.connect() as conn:
            row = await CatalogRepository(conn, namespace_id, dialect=self.db.dialect).get_version(workflow, version)
        if row is None:
            raise WorkflowNotFound(workflow, version)
        info = VersionInfo(
            input_validator=_validator(_load(row["input_schema"])),
            event_validators=_event_validators(_load(row["event_schemas"])),
            timeout_ms=row["timeout_ms"],
        )
        self._versions[key] = info
        return info

    def event_validator(self, info: VersionInfo, workflow: str, version: str, name: str) -> Any | None:
        if info.event_validators is None:
            return None  # no schemas known (a push endpoint registered it): checked when the run waits
        if name not in info.event_validators:
            declared = ", ".join(sorted(info.event_validators)) or "none"
            raise NotFound(
                f"event {name!r} is not declared by workflow {workflow!r} version {version!r} (declared: {declared})"
            )
        return info.event_validators[name]


def input_hash(value: Any) -> str:
    """The hash a reference id's run keeps of its input (same input: same hash)."""
    return hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()


async def version_or_none(
    svc: Services, namespace_id: str, workflow: str, version: str, require_registered: bool
) -> VersionInfo | None:
    """The version's catalogue entry, or None when no worker registered it yet.

    A start of an unregistered version is accepted (the run waits for a worker, which checks its
    input) unless the caller asks for ``require_registered``.

    Raises:
        WorkflowNotFound: No worker registered the version and ``require_registered`` is set.
    """
    try:
        return await svc.version(namespace_id, workflow, version)
    except WorkflowNotFound:
        if require_registered:
            raise
        return None


def _event_validators(schemas: dict[str, Any] | None) -> dict[str, Any | None] | None:
    # A worker always registers its events (maybe none: {}); NULL is a version registered without
    # schemas, by a push endpoint.
    if schemas is None:
        return None
    return {name: _validator(schema) for name, schema in schemas.items()}


def _load(text: str | None) -> Any:
    return msgspec.json.decode(text) if text else None


def dump(value: Mapping[str, Any] | list[Any] | None) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
