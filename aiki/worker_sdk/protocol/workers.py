"""The worker protocol's wire types: register, claim, heartbeat, watch, and the executor's writes."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiki.worker_sdk.protocol._base import ErrorInfo, RetryPolicyWire, RunStatus, TaskStatus


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
    """Sleeps up to this long may be held by their executor (``Sleep.hold``)."""
    payload_max_bytes: int | None = None
    """The largest request body the server takes, and the largest one command may be."""
    batch_max_bytes: int | None = None
    """The server takes ``POST /workers/commands`` bodies up to this size."""


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
