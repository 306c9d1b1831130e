"""The client API's wire types: start, read, list and act on runs; queries and bulk cancel."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiki.worker_sdk.protocol._base import ConflictPolicy, ErrorInfo, RetryPolicyWire, RunStatus, TaskStatus


class StartRunRequest(msgspec.Struct, omit_defaults=True):
    """``POST /runs``.

    A version no worker has registered yet is accepted by default: the run waits in ``queued``
    and its input is checked by the first worker that registers the version (a misfit fails the
    run with ``validation_error``). ``require_registered`` refuses it instead (404
    ``workflow_not_found``).
    """

    workflow: str
    version: str
    input: Any = None
    reference_id: str | None = None
    conflict: ConflictPolicy = "error"
    delay_ms: int | None = None
    retry: RetryPolicyWire | None = None
    pool: str | None = None
    require_registered: bool = False


class RunView(msgspec.Struct, omit_defaults=True):
    """A run as the client sees it."""

    id: str
    workflow: str
    version: str
    status: RunStatus
    revision: int
    attempt: int
    created_at: int
    updated_at: int
    input: msgspec.Raw
    output: msgspec.Raw  # JSON null until the run completes (msgspec cannot decode ``Raw | None``)
    error: ErrorInfo | None = None
    reference_id: str | None = None
    parent_run_id: str | None = None
    pool: str | None = None
    recoveries: int = 0
    wake_at: int | None = None
    finished_at: int | None = None


class StartRunResponse(msgspec.Struct):
    run: RunView
    created: bool


class SendEventRequest(msgspec.Struct, omit_defaults=True):
    data: Any = None
    reference_id: str | None = None


class SendEventResponse(msgspec.Struct):
    event_id: str
    created: bool


class CancelRunRequest(msgspec.Struct, omit_defaults=True):
    reason: str | None = None


class RunActionRequest(msgspec.Struct, omit_defaults=True):
    """Body of ``POST /runs/{id}/pause|resume|wake|requeue`` (optional: the body may be empty)."""

    reason: str | None = None


class RunListResponse(msgspec.Struct, omit_defaults=True):
    items: list[RunView]
    next_cursor: str | None = None


class HistoryEntry(msgspec.Struct, omit_defaults=True):
    id: int
    attempt: int
    from_status: str | None
    to_status: str
    created_at: int
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Queries: run detail, grouped history, workers, the workflow catalogue, bulk cancel
# ---------------------------------------------------------------------------------------------

DEFAULT_POOL = "default"
"""The pool of runs started without ``pool=`` and of workers that name no pools."""


class TaskDetail(msgspec.Struct, omit_defaults=True):
    """One task entry as the run detail shows it (``discarded``: dropped by a workflow retry or cancel)."""

    id: str
    name: str
    address: str
    seq: int
    status: TaskStatus
    attempts: int
    input: msgspec.Raw
    output: msgspec.Raw  # JSON null unless completed
    created_at: int
    updated_at: int
    error: ErrorInfo | None = None
    next_attempt_at: int | None = None


class EventDetail(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    seq: int
    data: msgspec.Raw
    created_at: int
    reference_id: str | None = None


class SleepDetail(msgspec.Struct, omit_defaults=True):
    name: str
    seq: int
    status: Literal["sleeping", "completed", "cancelled"]
    wake_at: int
    created_at: int


class WaitTimeoutDetail(msgspec.Struct):
    name: str
    seq: int
    created_at: int


class ChildRun(msgspec.Struct, omit_defaults=True):
    """A run started by another run, as its parent's detail lists it."""

    id: str
    workflow: str
    version: str
    status: RunStatus
    created_at: int
    updated_at: int
    reference_id: str | None = None
    finished_at: int | None = None


class RunDetail(msgspec.Struct, omit_defaults=True):
    """``GET /runs/{id}/detail``: the run and everything recorded inside it."""

    run: RunView
    tasks: list[TaskDetail]
    events: list[EventDetail]
    sleeps: list[SleepDetail]
    wait_timeouts: list[WaitTimeoutDetail]
    children: list[ChildRun]
    children_truncated: bool
    """More children exist than listed; list them all with ``GET /runs?parent_run_id=``."""


class AttemptHistory(msgspec.Struct, omit_defaults=True):
    """The status transitions of one workflow attempt, oldest first."""

    attempt: int
    started_at: int
    last_status: str
    entries: list[HistoryEntry]
    ended_at: int | None = None
    """When the attempt reached a terminal status or handed over to the next attempt."""


class GroupedHistory(msgspec.Struct):
    """``GET /runs/{id}/history?group_by=attempt``."""

    run_id: str
    attempts: list[AttemptHistory]


class ServedVersion(msgspec.Struct):
    workflow: str
    version: str


class WorkerView(msgspec.Struct, omit_defaults=True):
    """A worker as ``GET /workers`` lists it.

    ``status`` is ``stale`` when no heartbeat arrived for several lease TTLs (the worker is likely
    gone; its runs are recovered when their leases expire).
    """

    id: str
    host: str
    versions: list[ServedVersion]
    pools: list[str]
    concurrency: int
    started_at: int
    last_heartbeat_at: int
    in_flight: int
    status: Literal["active", "stale"]
    pid: int | None = None


class WorkerListResponse(msgspec.Struct):
    items: list[WorkerView]


class VersionSummary(msgspec.Struct, omit_defaults=True):
    version: str
    run_counts: dict[str, int]
    """Runs of this version by status (statuses with no run are left out)."""
    total_runs: int
    created_at: int | None = None
    updated_at: int | None = None


class WorkflowSummary(msgspec.Struct, omit_defaults=True):
    name: str
    versions: list[VersionSummary]
    run_counts: dict[str, int]
    total_runs: int
    created_at: int | None = None


class WorkflowListResponse(msgspec.Struct):
    items: list[WorkflowSummary]


class CancelRunsRequest(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """``POST /runs/cancel``: cancel every live run matching the filters (the list's filters).

    At least one filter is required. Times are milliseconds since the epoch or ISO 8601 strings.
    """

    status: list[RunStatus] = msgspec.field(default_factory=list)
    workflow: str | None = None
    version: str | None = None
    reference_id: str | None = None
    schedule_id: str | None = None
    parent_run_id: str | None = None
    pool: str | None = None
    created_after: int | str | None = None
    created_before: int | str | None = None
    reason: str | None = None
    limit: int = 1000


class CancelRunsResponse(msgspec.Struct):
    cancelled: list[str]
    """The ids this request moved to ``cancelled``, newest first."""
    truncated: bool
    """More live runs matched than ``limit``: send the request again to cancel the rest."""
