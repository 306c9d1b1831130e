"""What the core's services return: runs, activations and the answers to executor commands.

Immutable values that know nothing of the wire; ``aiki.api.wire`` maps them to the protocol's
types in one place. They are frozen :class:`msgspec.Struct` s rather than frozen dataclasses for
the hot path's sake only (a frozen dataclass sets each field through ``object.__setattr__``:
building a claim's activation took four times as long); nothing encodes them directly.

User payloads stay the JSON text they are stored as (``input``, ``output``, event ``data``): they
are never decoded on the server, only passed on. ``output`` is None until there is one (the wire
says JSON ``null``).
"""

from __future__ import annotations

import msgspec


class Failure(msgspec.Struct, frozen=True):
    """A failure as recorded: exception type name, message, optional detail."""

    type: str
    message: str
    code: str | None = None
    traceback: str | None = None
    cause: str | None = None


class Run(msgspec.Struct, frozen=True):
    """A run as a reader sees it (``input``/``output``: stored JSON text)."""

    id: str
    workflow: str
    version: str
    status: str
    revision: int
    attempt: int
    created_at: int
    updated_at: int
    input: str
    output: str | None
    error: Failure | None
    reference_id: str | None
    parent_run_id: str | None
    pool: str | None
    recoveries: int
    wake_at: int | None
    finished_at: int | None


class StartedRun(msgspec.Struct, frozen=True):
    """A start's answer: the run, and whether this start created it (else its reference id named it)."""

    run: Run
    created: bool


class SentEvent(msgspec.Struct, frozen=True):
    """An event send's answer: the event, and whether this send created it."""

    event_id: str
    created: bool


class HistoryEntry(msgspec.Struct, frozen=True):
    """One status transition of a run."""

    id: int
    attempt: int
    from_status: str | None
    to_status: str
    created_at: int
    reason: str | None


class TaskEntry(msgspec.Struct, frozen=True):
    """One recorded task entry of a run: the ``seq``-th call at ``address`` in replay order."""

    address: str
    seq: int
    name: str
    status: str
    attempts: int
    output: str | None
    error: Failure | None
    next_attempt_at: int | None


class EventEntry(msgspec.Struct, frozen=True):
    """An event buffered for a run (``data``: stored JSON text)."""

    id: str
    name: str
    seq: int
    data: str
    reference_id: str | None


class SleepEntry(msgspec.Struct, frozen=True):
    name: str
    seq: int
    status: str
    wake_at: int


class WaitTimeoutEntry(msgspec.Struct, frozen=True):
    """The ``seq``-th wait on ``name`` ended by its timeout."""

    name: str
    seq: int


class WaitRef(msgspec.Struct, frozen=True):
    """The ``seq``-th wait on ``name`` (an event name, or ``@child:<run id>`` for a child)."""

    name: str
    seq: int


class ChildEntry(msgspec.Struct, frozen=True):
    """A child run started by its parent: entry ``seq`` at ``address`` of the parent's replay."""

    address: str
    seq: int
    run_id: str
    workflow: str
    version: str
    status: str
    output: str | None
    error: Failure | None


class Activation(msgspec.Struct, frozen=True):
    """Everything an executor needs to replay one run it claimed (``retry``: the stored policy's JSON)."""

    run_id: str
    revision: int
    workflow: str
    version: str
    attempt: int
    input: str
    lease_ttl_ms: int
    tasks: list[TaskEntry]
    events: list[EventEntry]
    sleeps: list[SleepEntry]
    wait_timeouts: list[WaitTimeoutEntry]
    retry: str | None
    reference_id: str | None
    children: list[ChildEntry]
    deadline_at: int | None
    resumed_wait: WaitRef | None


class WorkerRegistration(msgspec.Struct, frozen=True):
    """A registration's answer: the worker and the server's terms."""

    worker_id: str
    lease_ttl_ms: int
    heartbeat_interval_ms: int
    payload_max_bytes: int | None
    sleep_hold_max_ms: int | None


class HeldRuns(msgspec.Struct, frozen=True):
    """A heartbeat's or watch's answer: runs to stop at once (``stale``) or at a step boundary (``paused``)."""

    stale: list[str]
    paused: list[str]


class TaskRecorded(msgspec.Struct, frozen=True):
    """A ``RecordTask``'s answer: recorded now (else already, the same), and whether a pause is requested."""

    recorded: bool
    paused: bool = False


class Transitioned(msgspec.Struct, frozen=True):
    """A transition's answer: the run's status, and whether the executor lets it go (``suspended``)
    or goes on with it (at ``revision``; with the ``events`` or ``child`` it waited for)."""

    status: str
    suspended: bool = True
    held: bool = False
    events: list[EventEntry] | None = None
    revision: int | None = None
    child: ChildEntry | None = None


class ChildStarted(msgspec.Struct, frozen=True):
    """A ``StartChild``'s answer: the child (None when a pause is requested), created now or before."""

    child: ChildEntry | None = None
    created: bool = False
    paused: bool = False
