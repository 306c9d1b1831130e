"""Pure view-model builders: service results in, plain values for the templates out.

No I/O and no Litestar here, so every decision a page makes (which actions a run offers, when a
list keeps refreshing, what an empty state says, how a filter reads) is unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec

from aiki.iam.models import ApiKeyView
from aiki.platform.domain import inspection as i
from aiki.platform.domain import run_states
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.domain.queries import RunFilter, check_time_range, parse_statuses, parse_time
from aiki.platform.domain.values import Failure, Run

RUN_ACTIONS = ("cancel", "pause", "resume", "wake", "requeue")
"""The operator actions on a run, in the order the run page shows them."""

FILTER_FIELDS = ("status", "workflow", "version", "reference_id", "created_after", "created_before")
PAGE_SIZE = 50
REFRESH_SECONDS = 2


def fmt_time(ms: int | None) -> str:
    """Milliseconds since the epoch as ``2026-11-25 10:04:05 UTC``; an empty string for ``None``."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None:
        return ""
    total = max(0, end_ms - start_ms)
    if total < 1000:
        return f"{total} ms"
    seconds = total / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def pretty_json(value: msgspec.Raw | bytes | str | None) -> str:
    """A JSON document indented for reading; the text as it is when it is not JSON."""
    if value is None:
        return "null"
    data = bytes(value) if not isinstance(value, str) else value.encode()
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode(errors="replace")
    return msgspec.json.format(msgspec.json.encode(decoded), indent=2).decode()


def is_null(value: msgspec.Raw | str | None) -> bool:
    if value is None:
        return True
    return (value.encode() if isinstance(value, str) else bytes(value)).strip() in (b"", b"null")


def valid_actions(status: str) -> list[str]:
    """The operator actions the run's status allows (from the run state machine)."""
    allowed = []
    for action in RUN_ACTIONS:
        froms = set(run_states.TRANSITIONS[action])
        if action == "resume":
            froms |= set(run_states.TRANSITIONS["resume_delayed"])
        if status in froms:
            allowed.append(action)
    return allowed


def status_class(status: str) -> str:
    """A CSS class per family of statuses (colour of the status badge)."""
    if status == "completed":
        return "ok"
    if status in ("failed", "stalled"):
        return "bad"
    if status == "cancelled":
        return "muted"
    if status in ("running", "queued"):
        return "live"
    return "waiting"


# -- runs list -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """The runs list filters as the form shows them (the raw text the person typed)."""

    values: dict[str, str]
    run_filter: RunFilter

    def query(self, **extra: str | None) -> str:
        """The query string of these filters plus ``extra`` (empty values left out)."""
        items = {k: v for k, v in self.values.items() if v}
        items.update({k: v for k, v in extra.items() if v})
        return urlencode(items)


def parse_filters(query: Mapping[str, str]) -> Filters:
    """Read the runs filters from a query string; bad values raise ``InputInvalid`` naming the field."""
    values = {name: (query.get(name) or "").strip() for name in FILTER_FIELDS}
    after = parse_time(values["created_after"] or None, "created_after")
    before = parse_time(values["created_before"] or None, "created_before")
    check_time_range(after, before)
    f = RunFilter(
        statuses=parse_statuses([values["status"]] if values["status"] else None),
        workflow=values["workflow"] or None,
        version=values["version"] or None,
        reference_id=values["reference_id"] or None,
        created_after=after,
        created_before=before,
    )
    return Filters(values=values, run_filter=f)


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    workflow: str
    version: str
    status: str
    status_class: str
    reference_id: str
    created: str
    updated: str
    duration: str
    href: str


@dataclass(frozen=True, slots=True)
class RunsPage:
    rows: list[RunRow]
    filters: Filters
    statuses: list[str]
    next_href: str | None
    first_href: str | None
    live: bool
    filtered: bool
    refresh_href: str


def run_row(run: Run, base: str) -> RunRow:
    return RunRow(
        id=run.id,
        workflow=run.workflow,
        version=run.version,
        status=run.status,
        status_class=status_class(run.status),
        reference_id=run.reference_id or "",
        created=fmt_time(run.created_at),
        updated=fmt_time(run.updated_at),
        duration=fmt_duration(run.created_at, run.finished_at),
        href=f"{base}/{run.id}",
    )


def runs_page(listing: i.RunPage, filters: Filters, base: str, cursor: str | None) -> RunsPage:
    """The runs list: rows, keyset links, and whether it keeps refreshing (some run is live)."""
    rows = [run_row(r, base) for r in listing.items]
    next_href = f"{base}?{filters.query(cursor=listing.next_cursor)}" if listing.next_cursor else None
    first_href = f"{base}?{filters.query()}" if cursor else None
    own = filters.query(cursor=cursor)
    return RunsPage(
        rows=rows,
        filters=filters,
        statuses=sorted(run_states.ALL_STATUSES),
        next_href=next_href,
        first_href=first_href,
        # Refresh only the first page: later pages are a fixed window the person is reading.
        live=cursor is None and (not rows or any(r.status in run_states.LIVE for r in listing.items)),
        filtered=not filters.run_filter.is_empty(),
        refresh_href=f"{base}?{own}" if own else base,
    )


# -- run detail ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: str
    from_status: str
    to_status: str
    status_class: str
    reason: str


@dataclass(frozen=True, slots=True)
class AttemptVM:
    attempt: int
    started: str
    ended: str
    duration: str
    last_status: str
    entries: list[TimelineEntry]


@dataclass(frozen=True, slots=True)
class TaskVM:
    name: str
    address: str
    seq: int
    status: str
    status_class: str
    attempts: int
    input: str
    output: str | None
    error: Failure | None
    next_attempt: str
    created: str
    updated: str


@dataclass(frozen=True, slots=True)
class RunDetailVM:
    run: Run
    status_class: str
    input: str
    output: str | None
    error: Failure | None
    created: str
    updated: str
    finished: str
    wake_at: str
    attempts: list[AttemptVM]
    tasks: list[TaskVM]
    events: list[dict[str, Any]]
    sleeps: list[dict[str, Any]]
    children: list[RunRow]
    children_truncated: bool
    parent_href: str | None
    actions: list[str]
    live: bool
    extra: dict[str, Any] = field(default_factory=dict)


def run_detail(detail: i.RunDetail, history: i.GroupedHistory, base: str, *, can_manage: bool) -> RunDetailVM:
    """Everything the run page shows; ``actions`` only those the status allows and the role may take."""
    run = detail.run
    attempts = [
        AttemptVM(
            attempt=a.attempt,
            started=fmt_time(a.started_at),
            ended=fmt_time(a.ended_at),
            duration=fmt_duration(a.started_at, a.ended_at),
            last_status=a.last_status,
            entries=[
                TimelineEntry(
                    at=fmt_time(e.created_at),
                    from_status=e.from_status or "",
                    to_status=e.to_status,
                    status_class=status_class(e.to_status),
                    reason=e.reason or "",
                )
                for e in a.entries
            ],
        )
        for a in history.attempts
    ]
    tasks = [
        TaskVM(
            name=t.name,
            address=t.address,
            seq=t.seq,
            status=t.status,
            status_class=status_class(t.status),
            attempts=t.attempts,
            input=pretty_json(t.input),
            output=None if is_null(t.output) and t.status != "completed" else pretty_json(t.output),
            error=t.error,
            next_attempt=fmt_time(t.next_attempt_at),
            created=fmt_time(t.created_at),
            updated=fmt_time(t.updated_at),
        )
        for t in detail.tasks
    ]
    events = [
        {"name": e.name, "seq": e.seq, "data": pretty_json(e.data), "at": fmt_time(e.created_at)} for e in detail.events
    ]
    sleeps = [
        {"name": s.name, "seq": s.seq, "status": s.status, "wake_at": fmt_time(s.wake_at), "at": fmt_time(s.created_at)}
        for s in detail.sleeps
    ]
    children = [
        RunRow(
            id=c.id,
            workflow=c.workflow,
            version=c.version,
            status=c.status,
            status_class=status_class(c.status),
            reference_id=c.reference_id or "",
            created=fmt_time(c.created_at),
            updated=fmt_time(c.updated_at),
            duration=fmt_duration(c.created_at, c.finished_at),
            href=f"{base}/{c.id}",
        )
        for c in detail.children
    ]
    return RunDetailVM(
        run=run,
        status_class=status_class(run.status),
        input=pretty_json(run.input),
        output=None if run.status != "completed" else pretty_json(run.output),
        error=run.error,
        created=fmt_time(run.created_at),
        updated=fmt_time(run.updated_at),
        finished=fmt_time(run.finished_at),
        wake_at=fmt_time(run.wake_at),
        attempts=attempts,
        tasks=tasks,
        events=events,
        sleeps=sleeps,
        children=children,
        children_truncated=detail.children_truncated,
        parent_href=f"{base}/{run.parent_run_id}" if run.parent_run_id else None,
        actions=valid_actions(run.status) if can_manage else [],
        live=run.status in run_states.LIVE,
    )


# -- API keys ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    prefix: str
    role: str
    created: str
    expires: str
    last_used: str
    state: str


def key_rows(keys: list[ApiKeyView], now_ms: int) -> list[KeyRow]:
    """API keys, live ones first, each with its state (``active``, ``revoked``, ``expired``)."""
    rows = []
    for k in keys:
        if k.revoked_at is not None:
            state = "revoked"
        elif k.expires_at is not None and k.expires_at <= now_ms:
            state = "expired"
        else:
            state = "active"
        rows.append(
            KeyRow(
                id=k.id,
                name=k.name,
                prefix=k.prefix,
                role=k.role,
                created=fmt_time(k.created_at),
                expires=fmt_time(k.expires_at) or "never",
                last_used=fmt_time(k.last_used_at) or "never",
                state=state,
            )
        )
    rows.sort(key=lambda r: r.state != "active")
    return rows


def expiry_ms(days: str, now_ms: int) -> int | None:
    """The expiry of a new key from the form's "expires in N days" (blank or 0: never)."""
    text = days.strip()
    if not text or text == "0":
        return None
    if not text.isdigit() or int(text) > 3650:
        raise InputInvalid("expires_in_days: a whole number of days from 0 to 3650", field="expires_in_days")
    return now_ms + int(text) * 86_400_000


def worker_command(base_url: str, key: str) -> str:
    """The command that connects a worker with a new key, as the key page shows it."""
    return f"aiki worker your_module:your_workflow --url {base_url} --api-key {key}"
