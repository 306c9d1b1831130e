"""The executor's writes: one typed command each, and the bodies of the single-command routes.

Every write an executor makes to a run it holds is a :data:`Command`: a tagged union (the ``kind``
field names the member) of small structs, each naming the run and the revision it is fenced by. A
worker sends them as a :class:`CommandBatch` (``POST /workers/commands``, or the local port's
``run_commands``); the server applies each with one handler per kind and answers a
:class:`CommandResult` per command, in order.

Within a batch, commands of one run are applied in their order, and once one is refused the run's
later commands are answered with the same problem (its ``instance`` naming each command's own
route) and not applied: a task record sent ahead of the completion it precedes refuses the
completion too. Commands of different runs are independent
(each in its own transaction, fenced by its own revision).

The per-run routes (``POST /runs/{id}/tasks``, ``/transition``, ``/children``) take the older
single-request bodies below and run the same handlers: they are thin wrappers kept for HTTP users.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from aiki.worker_sdk.protocol._base import ConflictPolicy, ErrorInfo, Problem, RetryPolicyWire, RunStatus
from aiki.worker_sdk.protocol.workers import ChildRecord, EventRecord


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


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class _Command(msgspec.Struct, omit_defaults=True, kw_only=True, tag_field="kind"):
    """What every command carries: the run it writes to and the revision its executor holds."""

    run_id: str
    revision: int

    parks: ClassVar[bool] = False
    """The server may hold the answer (until a sleep's end): sent alone, never in a shared batch."""
    ends_execution: ClassVar[bool] = False
    """Once applied, the executor writes nothing more for this run (it ended or was released)."""


class RecordTask(_Command, tag="record_task"):
    """Record the outcome of one task attempt (``address``, ``seq``); answered by :class:`RecordTaskResponse`.

    Recorded once: repeating the same outcome answers ``recorded=False``; a different outcome for an
    entry already recorded is a ``task_conflict``.
    """

    address: str
    seq: int
    name: str
    status: Literal["completed", "failed", "awaiting_retry"]
    attempts: int
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    next_attempt_at: int | None = None


class Complete(_Command, tag="complete"):
    """The workflow returned ``output``: the run is ``completed``."""

    output: Any = None
    ends_execution: ClassVar[bool] = True


class Fail(_Command, tag="fail"):
    """The workflow raised and its policy does not retry: the run is ``failed``."""

    error: ErrorInfo | None = None
    ends_execution: ClassVar[bool] = True


class Retry(_Command, tag="retry"):
    """The workflow raised and its policy retries it at ``wake_at`` (a new attempt; ``error`` recorded)."""

    error: ErrorInfo | None = None
    wake_at: int | None = None
    ends_execution: ClassVar[bool] = True


class AwaitTaskRetry(_Command, tag="await_task_retry"):
    """A task attempt failed and is retried at ``wake_at``: the run waits (``awaiting_retry``)."""

    wake_at: int | None = None


class Sleep(_Command, tag="sleep"):
    """A durable sleep ``name`` (entry ``seq``) of ``duration_ms``.

    With ``hold`` the executor asks to keep the run while it sleeps (a short sleep): if the server
    agrees it answers ``held=True`` and the executor sends :class:`ResumeSleep` at once.
    """

    name: str
    seq: int
    duration_ms: int = 0
    hold: bool = False


class ResumeSleep(_Command, tag="resume_sleep"):
    """End a held sleep: the server answers at the sleep's end (at once, refused, if the run changed)."""

    name: str
    seq: int
    parks: ClassVar[bool] = True


class AwaitEvent(_Command, tag="await_event"):
    """Wait for event ``event`` (the replay's wait ``wait_seq``), up to ``timeout_ms``.

    ``consumed`` is how many events of that name the replay has consumed: when more are buffered the
    server does not suspend and answers them (``suspended=False``).
    """

    event: str
    wait_seq: int
    consumed: int
    timeout_ms: int | None = None


class AwaitChild(_Command, tag="await_child"):
    """Wait for child run ``child_run_id`` to end (the replay's wait ``wait_seq``), up to ``timeout_ms``.

    A child that has already ended is answered at once with its record (``suspended=False``).
    """

    child_run_id: str
    wait_seq: int
    timeout_ms: int | None = None


class Yield(_Command, tag="yield"):
    """A pause was requested and the executor stopped at a step boundary: the run is released.

    If it was resumed meanwhile the answer is ``suspended=False`` and the executor goes on.
    """


class StartChild(_Command, tag="start_child"):
    """Start a child run as entry ``seq`` at ``address`` of the parent's replay (see :class:`StartChildRequest`)."""

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


Command = (
    RecordTask
    | Complete
    | Fail
    | Retry
    | AwaitTaskRetry
    | Sleep
    | ResumeSleep
    | AwaitEvent
    | AwaitChild
    | Yield
    | StartChild
)
"""Every write an executor makes, as one tagged union (``kind``)."""

Transition = Complete | Fail | Retry | AwaitTaskRetry | Sleep | ResumeSleep | AwaitEvent | AwaitChild | Yield
"""The commands that end or suspend an execution (answered by :class:`TransitionResponse`)."""

BATCH_MAX_COMMANDS = 256
"""The most commands one batch may carry."""


class CommandBatch(msgspec.Struct):
    """Several executor writes in one request (``POST /workers/commands``); see the module docstring."""

    commands: Annotated[list[Command], msgspec.Meta(min_length=1, max_length=BATCH_MAX_COMMANDS)]


class CommandResult(msgspec.Struct, omit_defaults=True):
    """The answer to one command: the problem it was refused with, or its kind's response."""

    problem: Problem | None = None
    record: RecordTaskResponse | None = None
    transition: TransitionResponse | None = None
    child: StartChildResponse | None = None


class CommandResults(msgspec.Struct):
    results: list[CommandResult]
    """One result per command, in the batch's order."""
