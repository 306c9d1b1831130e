"""What the read side answers: pages of runs, a run's detail and grouped history, workers, the
workflow catalogue, a bulk cancel. Frozen, slotted dataclasses; ``aiki.api.wire`` maps them to the
wire. Payloads stay the stored JSON text (``output`` None: none yet)."""

from __future__ import annotations

from dataclasses import dataclass

from aiki.platform.domain.values import Failure, HistoryEntry, Run


@dataclass(frozen=True, slots=True)
class RunPage:
    """Runs newest first; ``next_cursor`` names the next page (None: the last)."""

    items: list[Run]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TaskDetail:
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


@dataclass(frozen=True, slots=True)
class EventDetail:
    id: str
    name: str
    seq: int
    data: str
    created_at: int
    reference_id: str | None


@dataclass(frozen=True, slots=True)
class SleepDetail:
    name: str
    seq: int
    status: str
    wake_at: int
    created_at: int


@dataclass(frozen=True, slots=True)
class WaitTimeoutDetail:
    name: str
    seq: int
    created_at: int


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A run started by another run, as its parent's detail lists it."""

    id: str
    workflow: str
    version: str
    status: str
    created_at: int
    updated_at: int
    reference_id: str | None
    finished_at: int | None


@dataclass(frozen=True, slots=True)
class RunDetail:
    """The run and everything recorded inside it (``children_truncated``: more children exist)."""

    run: Run
    tasks: list[TaskDetail]
    events: list[EventDetail]
    sleeps: list[SleepDetail]
    wait_timeouts: list[WaitTimeoutDetail]
    children: list[ChildRun]
    children_truncated: bool


@dataclass(frozen=True, slots=True)
class AttemptHistory:
    """The status transitions of one workflow attempt, oldest first."""

    attempt: int
    started_at: int
    last_status: str
    entries: list[HistoryEntry]
    ended_at: int | None


@dataclass(frozen=True, slots=True)
class GroupedHistory:
    run_id: str
    attempts: list[AttemptHistory]


@dataclass(frozen=True, slots=True)
class ServedVersion:
    workflow: str
    version: str


@dataclass(frozen=True, slots=True)
class WorkerInfo:
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


@dataclass(frozen=True, slots=True)
class VersionSummary:
    version: str
    run_counts: dict[str, int]
    total_runs: int
    created_at: int | None
    updated_at: int | None


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    name: str
    versions: list[VersionSummary]
    run_counts: dict[str, int]
    total_runs: int
    created_at: int | None


@dataclass(frozen=True, slots=True)
class CancelledRuns:
    """A bulk cancel's answer: the ids it cancelled, newest first, and whether more matched."""

    cancelled: list[str]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Schedule:
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


@dataclass(frozen=True, slots=True)
class ActivatedSchedule:
    """An activation's answer: the schedule, and whether this activation created it."""

    schedule: Schedule
    created: bool


@dataclass(frozen=True, slots=True)
class SchedulePage:
    items: list[Schedule]
    next_cursor: str | None
