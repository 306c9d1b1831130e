"""What the read side answers: pages of runs, a run's detail and grouped history, workers, the
workflow catalogue, a bulk cancel.

Immutable values (frozen Structs, as in :mod:`~aiki.platform.domain.values`);
``aiki.api.wire_reads`` maps them to the wire. Payloads stay the stored JSON text (``output``
None: none yet).
"""

from __future__ import annotations

import msgspec

from aiki.platform.domain.values import Failure, HistoryEntry, Run


class RunPage(msgspec.Struct, frozen=True):
    """Runs newest first; ``next_cursor`` names the next page (None: the last)."""

    items: list[Run]
    next_cursor: str | None


class TaskDetail(msgspec.Struct, frozen=True):
    """One task entry as the run detail shows it (``discarded``: dropped by a workflow retry or cancel)."""

    id: str
    name: str
    address: str
    seq: int
    status: str
    attempts: int
    input: str
    output: str | None
    created_at: int
    updated_at: int
    error: Failure | None
    next_attempt_at: int | None


class EventDetail(msgspec.Struct, frozen=True):
    id: str
    name: str
    seq: int
    data: str
    created_at: int
    reference_id: str | None


class SleepDetail(msgspec.Struct, frozen=True):
    name: str
    seq: int
    status: str
    wake_at: int
    created_at: int


class WaitTimeoutDetail(msgspec.Struct, frozen=True):
    name: str
    seq: int
    created_at: int


class ChildRun(msgspec.Struct, frozen=True):
    """A run started by another run, as its parent's detail lists it."""

    id: str
    workflow: str
    version: str
    status: str
    created_at: int
    updated_at: int
    reference_id: str | None
    finished_at: int | None


class RunDetail(msgspec.Struct, frozen=True):
    """The run and everything recorded inside it (``children_truncated``: more children exist)."""

    run: Run
    tasks: list[TaskDetail]
    events: list[EventDetail]
    sleeps: list[SleepDetail]
    wait_timeouts: list[WaitTimeoutDetail]
    children: list[ChildRun]
    children_truncated: bool


class AttemptHistory(msgspec.Struct, frozen=True):
    """The status transitions of one workflow attempt, oldest first."""

    attempt: int
    started_at: int
    last_status: str
    entries: list[HistoryEntry]
    ended_at: int | None


class GroupedHistory(msgspec.Struct, frozen=True):
    run_id: str
    attempts: list[AttemptHistory]


class ServedVersion(msgspec.Struct, frozen=True):
    workflow: str
    version: str


class WorkerInfo(msgspec.Struct, frozen=True):
    """A registered worker (``status``: ``active``, or ``stale`` once it missed several heartbeats)."""

    id: str
    host: str
    versions: list[ServedVersion]
    pools: list[str]
    concurrency: int
    started_at: int
    last_heartbeat_at: int
    in_flight: int
    status: str
    pid: int | None


class VersionSummary(msgspec.Struct, frozen=True):
    version: str
    run_counts: dict[str, int]
    total_runs: int
    created_at: int | None
    updated_at: int | None


class WorkflowSummary(msgspec.Struct, frozen=True):
    name: str
    versions: list[VersionSummary]
    run_counts: dict[str, int]
    total_runs: int
    created_at: int | None


class CancelledRuns(msgspec.Struct, frozen=True):
    """A bulk cancel's answer: the ids it cancelled, newest first, and whether more matched."""

    cancelled: list[str]
    truncated: bool


class Schedule(msgspec.Struct, frozen=True):
    """A schedule (``input``: stored JSON text; ``retry``: the stored policy's JSON)."""

    id: str
    workflow: str
    version: str
    timezone: str
    overlap: str
    status: str
    input: str | None
    created_at: int
    updated_at: int
    cron: str | None
    every_ms: int | None
    reference_id: str | None
    next_fire_at: int | None
    last_fire_at: int | None
    last_run_id: str | None
    retry: str | None
    pool: str | None


class ActivatedSchedule(msgspec.Struct, frozen=True):
    """An activation's answer: the schedule, and whether this activation created it."""

    schedule: Schedule
    created: bool


class SchedulePage(msgspec.Struct, frozen=True):
    items: list[Schedule]
    next_cursor: str | None
