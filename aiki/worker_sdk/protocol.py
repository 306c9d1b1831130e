"""Wire types shared by the SDK and the server.

Everything that crosses the HTTP boundary between a client/worker and the server is declared here
as a ``msgspec.Struct``. The server imports these types; the SDK never imports the server. User
payloads (run input, task output, event data) the server sends travel as ``msgspec.Raw``: JSON it
stored, returned byte for byte for the SDK to decode into the annotated type. Payloads sent *to*
the server are typed ``Any`` (the SDK may put a pre-encoded ``msgspec.Raw`` there).

Times are integer milliseconds since the Unix epoch (UTC); durations are integer milliseconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

RunStatus = Literal[
    "scheduled",
    "queued",
    "running",
    "paused",
    "sleeping",
    "awaiting_event",
    "awaiting_retry",
    "awaiting_child",
    "stalled",
    "completed",
    "failed",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

TaskStatus = Literal["running", "awaiting_retry", "completed", "failed", "discarded"]
ConflictPolicy = Literal["error", "return_existing"]


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    """A failure as recorded in the database: exception type name, message, optional detail."""

    type: str
    message: str
    code: str | None = None
    traceback: str | None = None
    cause: str | None = None


class RetryPolicyWire(msgspec.Struct, omit_defaults=True):
    """A retry policy as it travels (``RetryPolicy`` in the SDK is the public face)."""

    kind: Literal["never", "fixed", "exponential", "jittered"] = "never"
    max_attempts: int = 1
    base_ms: int = 1000
    factor: float = 2.0
    max_delay_ms: int | None = None
    non_retryable: list[str] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Client API
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Worker protocol
# ---------------------------------------------------------------------------------------------


class VersionSpec(msgspec.Struct, omit_defaults=True):
    """A workflow version a worker serves, with the JSON Schemas of its input and events."""

    workflow: str
    version: str
    input_schema: dict[str, Any] | None = None
    event_schemas: dict[str, dict[str, Any] | None] = msgspec.field(default_factory=dict)
    timeout_ms: int | None = None
    """The version's execution time limit (wall-clock from the run's first claim), enforced by the server."""


class RegisterWorkerRequest(msgspec.Struct, omit_defaults=True):
    worker_id: str
    host: str
    versions: list[VersionSpec]
    pools: list[str] = msgspec.field(default_factory=list)
    """Pools the worker claims from; none means the default pool only (name it to serve it too)."""
    concurrency: int = 1
    pid: int | None = None


class RegisterWorkerResponse(msgspec.Struct, omit_defaults=True):
    worker_id: str
    lease_ttl_ms: int
    heartbeat_interval_ms: int
    sleep_hold_max_ms: int | None = None
    """Sleeps up to this long may be held by their executor (``TransitionRequest.hold``)."""
    payload_max_bytes: int | None = None
    """The largest request body the server takes (a task record sent along with a transition
    counts toward the transition's body)."""
    batch_max_bytes: int | None = None
    """The server takes ``POST /workers/batch`` bodies up to this size (absent: no batch route)."""


class VersionRef(msgspec.Struct, array_like=True):
    workflow: str
    version: str


class ClaimRequest(msgspec.Struct, omit_defaults=True):
    worker_id: str
    versions: list[VersionRef]
    max_runs: int = 1
    wait_ms: int = 0
    pools: list[str] = msgspec.field(default_factory=list)


class TaskRecord(msgspec.Struct, omit_defaults=True):
    """One recorded task entry of a run: the ``seq``-th call at ``address`` in replay order."""

    address: str
    seq: int
    name: str
    status: TaskStatus
    attempts: int
    output: msgspec.Raw  # JSON null unless completed
    error: ErrorInfo | None = None
    next_attempt_at: int | None = None


class EventRecord(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    seq: int
    data: msgspec.Raw
    reference_id: str | None = None


class SleepRecord(msgspec.Struct, omit_defaults=True):
    name: str
    seq: int
    status: Literal["sleeping", "completed", "cancelled"]
    wake_at: int


class WaitTimeoutRecord(msgspec.Struct):
    """The ``seq``-th wait for event ``name`` ended by its timeout (so replay ends it the same way)."""

    name: str
    seq: int


class WaitRef(msgspec.Struct):
    """The ``seq``-th wait on ``name`` (an event name, or ``@child:<run id>`` for a child)."""

    name: str
    seq: int


class ChildRecord(msgspec.Struct, omit_defaults=True):
    """A child run started by the parent: entry ``seq`` at ``address`` of the parent's replay."""

    address: str
    seq: int
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    output: msgspec.Raw  # JSON null unless completed
    error: ErrorInfo | None = None


class Activation(msgspec.Struct, omit_defaults=True):
    """Everything an executor needs to replay one run, returned by a claim."""

    run_id: str
    revision: int
    workflow: str
    version: str
    attempt: int
    input: msgspec.Raw
    lease_ttl_ms: int
    tasks: list[TaskRecord] = msgspec.field(default_factory=list)
    events: list[EventRecord] = msgspec.field(default_factory=list)
    sleeps: list[SleepRecord] = msgspec.field(default_factory=list)
    wait_timeouts: list[WaitTimeoutRecord] = msgspec.field(default_factory=list)
    retry: RetryPolicyWire | None = None
    reference_id: str | None = None
    children: list[ChildRecord] = msgspec.field(default_factory=list)
    deadline_at: int | None = None
    """When the run's execution time limit expires (the server fails it with cause ``timeout`` then)."""
    resumed_wait: WaitRef | None = None
    """The last wait the run suspended on (an earlier execution reached it); the replay of
    earlier executions lasts at least until this wait is reached again."""


class ClaimResponse(msgspec.Struct):
    activations: list[Activation]


class HeartbeatRun(msgspec.Struct, array_like=True):
    run_id: str
    revision: int


class HeartbeatRequest(msgspec.Struct, omit_defaults=True):
    worker_id: str
    runs: list[HeartbeatRun] = msgspec.field(default_factory=list)


class HeartbeatResponse(msgspec.Struct):
    stale: list[str]
    """Runs the worker must stop executing: their revision moved on (cancelled, recovered, ...)."""
    paused: list[str] = msgspec.field(default_factory=list)
    """Runs a user paused while their executor was running: it stops at its next step boundary
    (the task under way finishes and is recorded; nothing new starts)."""


class WatchRequest(msgspec.Struct, omit_defaults=True):
    """``POST /workers/watch``: tell me at once when one of these executions must stop.

    A long-poll the worker keeps open while it executes runs. The server answers as soon as one of
    ``runs`` is fenced (its revision moved on: cancelled, timed out, recovered) or a pause of it is
    requested, else after ``wait_ms``. A newer watch of the same worker ends an older one parked on
    the same server (answered empty), so the worker sends a new one whenever it starts executing a
    run, without closing the old request.
    """

    worker_id: str
    runs: list[HeartbeatRun] = msgspec.field(default_factory=list)
    wait_ms: int = 0
    pausing: list[str] = msgspec.field(default_factory=list)
    """Runs of ``runs`` whose pause the worker already knows of: answered only once fenced."""


class WatchResponse(msgspec.Struct, omit_defaults=True):
    stale: list[str] = msgspec.field(default_factory=list)
    """Executions to stop at once (their tasks get ``asyncio.CancelledError``): the revision moved on."""
    paused: list[str] = msgspec.field(default_factory=list)
    """Executions to stop at their next step boundary: a pause is requested."""


class RecordTaskRequest(msgspec.Struct, omit_defaults=True):
    """Record the outcome of one task attempt, fenced by the run revision the executor holds."""

    revision: int
    address: str
    seq: int
    name: str
    status: Literal["completed", "failed", "awaiting_retry"]
    attempts: int
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    next_attempt_at: int | None = None


class RecordTaskResponse(msgspec.Struct, omit_defaults=True):
    recorded: bool
    """False when the same entry was already recorded with this outcome (an idempotent retry)."""
    paused: bool = False
    """A pause of the run is requested: the executor starts nothing new and stops (``yield``)."""


class StartChildRequest(msgspec.Struct, omit_defaults=True):
    """Start a child run as entry ``seq`` at ``address`` of the parent's replay, fenced by its revision.

    A second request for the same entry returns the child already started (``created=False``).
    The start options mean what they mean for ``StartRunRequest``: ``pool`` defaults to the
    parent's pool; a ``reference_id`` already naming a child of the same parent with the same
    input (or with ``conflict="return_existing"``) returns that child, and one naming any other
    run is a ``reference_conflict``.
    """

    revision: int
    address: str
    seq: int
    workflow: str
    version: str
    input: Any = None
    retry: RetryPolicyWire | None = None
    reference_id: str | None = None
    conflict: ConflictPolicy = "error"
    delay_ms: int | None = None
    pool: str | None = None
    require_registered: bool = False


class StartChildResponse(msgspec.Struct):
    """The child started (or the one already started for that entry).

    ``paused``: a pause of the parent is requested, so no child was started (``child`` is None):
    the executor stops at this step boundary (a ``yield``) and starts it after the resume.
    """

    child: ChildRecord | None = None
    created: bool = False
    paused: bool = False


class TransitionRequest(msgspec.Struct, omit_defaults=True):
    """An executor ends or suspends its execution of a run.

    ``kind`` decides which fields matter:

    * ``complete``: ``output``.
    * ``fail``: ``error``.
    * ``retry``: the workflow failed and its policy retries it at ``wake_at`` (``error`` recorded).
    * ``sleep``: ``sleep_name``, ``sleep_seq``, ``duration_ms``.
    * ``await_event``: ``event_name``, ``wait_seq``, ``consumed`` (events of that name the replay
      has consumed), optional ``timeout_ms``. If more than ``consumed`` events are buffered the
      server does not suspend: it answers ``suspended=False`` with the buffered events.
    * ``await_task_retry``: a task attempt failed and retries at ``wake_at``.
    * ``await_child``: ``child_run_id``, ``wait_seq``, optional ``timeout_ms``. The run is woken when
      the child reaches any terminal status; if it already has, the server answers
      ``suspended=False`` with the child's record.
    * ``yield``: a pause of the run was requested; the executor stopped at a step boundary. The run
      stays ``paused`` and is released (answered ``suspended=True``); if it was resumed meanwhile
      the answer is ``suspended=False`` and the executor goes on.
    * ``sleep`` with ``hold``: the executor asks to keep the run while it sleeps (a short sleep). If
      the server agrees it answers ``held=True``: the run is ``sleeping`` and stays leased to the
      executor, which sends ``resume_sleep`` (``sleep_name``, ``sleep_seq``) at once; the server
      answers it at the sleep's end (at once, refused, if the run was cancelled or woken
      meanwhile) and the executor carries on. Should it never come, the server wakes the run
      itself a grace period after the sleep's end, and it is claimed and replayed as after any
      sleep.

    While a pause is requested (the run is ``paused`` and still leased to its executor) every
    transition is taken as a ``yield``: its task record is recorded, nothing else it asks for.
    """

    revision: int
    kind: Literal[
        "complete",
        "fail",
        "retry",
        "sleep",
        "await_event",
        "await_task_retry",
        "await_child",
        "resume_sleep",
        "yield",
    ]
    output: Any = None
    error: ErrorInfo | None = None
    wake_at: int | None = None
    sleep_name: str | None = None
    sleep_seq: int | None = None
    duration_ms: int | None = None
    event_name: str | None = None
    wait_seq: int | None = None
    consumed: int | None = None
    timeout_ms: int | None = None
    child_run_id: str | None = None
    hold: bool = False
    task: RecordTaskRequest | None = None
    """A task attempt to record first, as ``POST /runs/{id}/tasks`` would (its own fence, its own
    errors): the executor's last write before this transition, sent along to save a round trip."""


class TransitionResponse(msgspec.Struct, omit_defaults=True):
    status: RunStatus
    suspended: bool = True
    held: bool = False
    """A ``sleep`` with ``hold``: the executor keeps the run and sends ``resume_sleep`` when it ends."""
    events: list[EventRecord] = msgspec.field(default_factory=list)
    revision: int | None = None
    child: ChildRecord | None = None


BATCH_MAX_OPS = 256
"""The most operations one ``POST /workers/batch`` may carry."""


class RecordTaskOp(msgspec.Struct, tag="record_task", tag_field="op"):
    """``POST /runs/{run_id}/tasks`` as one operation of a batch."""

    run_id: str
    request: RecordTaskRequest


class TransitionOp(msgspec.Struct, tag="transition", tag_field="op"):
    """``POST /runs/{run_id}/transition`` as one operation of a batch."""

    run_id: str
    request: TransitionRequest


class WorkerBatchRequest(msgspec.Struct):
    """Several executor writes in one request (``POST /workers/batch``).

    Each operation is what its own route does, in its own transaction, fenced by its own revision;
    one failing does not affect the others. A worker running many runs at once sends the writes that
    pile up while a batch is in flight as the next batch, so the HTTP cost is paid per batch rather
    than per write. Operations of one run are never in the same batch (an executor has at most one
    write in flight).
    """

    ops: Annotated[list[RecordTaskOp | TransitionOp], msgspec.Meta(min_length=1, max_length=BATCH_MAX_OPS)]


class BatchOutcome(msgspec.Struct, omit_defaults=True):
    """The answer to one operation: its response, or the problem its route would have answered."""

    problem: Problem | None = None
    record: RecordTaskResponse | None = None
    transition: TransitionResponse | None = None


class WorkerBatchResponse(msgspec.Struct):
    results: list[BatchOutcome]
    """One outcome per operation, in the request's order."""


# ---------------------------------------------------------------------------------------------
# Errors (RFC 9457 problem+json)
# ---------------------------------------------------------------------------------------------


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    field: str | None = None
    run_id: str | None = None


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------

OverlapPolicy = Literal["allow", "skip", "cancel_previous"]
ScheduleStatus = Literal["active", "paused"]


class ActivateScheduleRequest(msgspec.Struct, omit_defaults=True):
    """Create a schedule, or find the existing one with the same identity.

    Exactly one of ``cron`` and ``every_ms`` is set. The identity is ``reference_id`` when given,
    otherwise the definition (rule, time zone, overlap policy, workflow version and input).
    """

    workflow: str
    version: str
    input: Any = None
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    overlap: OverlapPolicy = "skip"
    reference_id: str | None = None
    retry: RetryPolicyWire | None = None
    """The workflow retry policy of every run the schedule starts."""
    pool: str | None = None
    """The worker pool of every run the schedule starts (None: the default pool)."""


class ScheduleView(msgspec.Struct, omit_defaults=True):
    """A schedule as the client sees it. ``next_fire_at`` is absent while paused."""

    id: str
    workflow: str
    version: str
    timezone: str
    overlap: OverlapPolicy
    status: ScheduleStatus
    input: msgspec.Raw
    created_at: int
    updated_at: int
    cron: str | None = None
    every_ms: int | None = None
    reference_id: str | None = None
    next_fire_at: int | None = None
    last_fire_at: int | None = None
    last_run_id: str | None = None
    retry: RetryPolicyWire | None = None
    pool: str | None = None


class ActivateScheduleResponse(msgspec.Struct):
    schedule: ScheduleView
    created: bool


class ScheduleListResponse(msgspec.Struct, omit_defaults=True):
    items: list[ScheduleView]
    next_cursor: str | None = None


class ReleaseRequest(msgspec.Struct, omit_defaults=True):
    """A stopping worker hands back the runs it holds (each at the revision it holds)."""

    worker_id: str
    runs: list[HeartbeatRun] = msgspec.field(default_factory=list)


class ReleaseResponse(msgspec.Struct):
    released: list[str]
    """Runs put back in the queue; the others had moved on (ended, suspended, cancelled, recovered)."""
