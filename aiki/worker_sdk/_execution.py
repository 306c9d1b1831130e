"""One execution of one activation: replay the workflow from the top and write what is new.

Every write names the revision the execution holds. Once a suspending or terminal transition is
sent (or the execution is fenced off) ``finished`` is set and nothing else is written: sibling
coroutines that reach the SDK afterwards stop quietly. ``outcome`` says what that transition was.

Handed back at a time limit (``writer.closing``, see ``_endpoint_execution.py``), it writes only the
records of task attempts that finished; those under way are cancelled and not recorded.

A pause requested while the execution runs (the worker hears of it through its watch or a
heartbeat, or a task record's answer says so) is honoured at the next step boundary: tasks under
way finish and are recorded, then instead of the next new task, child or sleep the execution sends
a ``yield`` transition and stops (see ``services/lifecycle.py`` on the server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import msgspec

from aiki.worker_sdk import _commands as commands
from aiki.worker_sdk import serde
from aiki.worker_sdk._commands import error_info
from aiki.worker_sdk._replay_state import TIMED_OUT, ReplayState
from aiki.worker_sdk._run_writer import Abandon as _Abandon
from aiki.worker_sdk._run_writer import Passthrough
from aiki.worker_sdk._run_writer import Suspend as _Suspend
from aiki.worker_sdk._worker_connection import WorkerConnection
from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.errors import (
    NonDeterminismError,
    PayloadTooLargeError,
    ReferenceConflictError,
    TaskFailedError,
    ValidationError,
    WorkflowNotFoundError,
)
from aiki.worker_sdk.protocol import (
    TERMINAL_STATUSES,
    Activation,
    AwaitChild,
    AwaitEvent,
    AwaitTaskRetry,
    ChildRecord,
    Command,
    Complete,
    ErrorInfo,
    Fail,
    RecordTask,
    Retry,
    Sleep,
    TransitionResponse,
    Yield,
)
from aiki.worker_sdk.retry import RetryPolicy
from aiki.worker_sdk.run import ChildHandle, ChildResult, EventResult, Run, SleepResult
from aiki.worker_sdk.tasks import Task

log = logging.getLogger("aiki.worker")
_SETTLE_TICKS = 3
Outcome = Literal["completed", "failed", "suspended"]
_OUTCOMES: dict[type, Outcome] = {Complete: "completed", Fail: "failed"}
# A refused input, reference or unknown version is the workflow's error, not the execution's.
_CHILD_PASSTHROUGH: Passthrough = (ValidationError, WorkflowNotFoundError, ReferenceConflictError)


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return int(time.time() * 1000)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


class Execution:
    """Executes one activation of a workflow version.

    Every write is a command sent through the worker connection's write pipeline, by this
    execution's :class:`~aiki.worker_sdk._run_writer.RunWriter` (one write at a time, deferral of
    a completed task's record, retries, fencing).

    Attributes:
        activation: What the claim returned.
        revision: The run revision this execution holds (its fencing token).
        finished: True once no more writes may be made.
        outcome: What the execution's ending transition came to (None: fenced off, abandoned, handed back).
    """

    def __init__(
        self,
        connection: WorkerConnection,
        version: WorkflowVersion[Any, Any],
        activation: Activation,
        *,
        retry_budget: float = 30.0,
        may_hold: Callable[[], bool] | None = None,
        worker_id: str | None = None,
        claimed_at: float | None = None,
    ) -> None:
        self.connection = connection
        self.version = version
        self.activation = activation
        self.run_id = activation.run_id
        self.state = ReplayState(activation)
        self.writer = connection.writer(
            activation,
            retry_budget=retry_budget,
            claimed_at=claimed_at,
            worker_id=worker_id,
            may_hold=may_hold,
            paused=self._pause_requested,
        )
        self._fatal: NonDeterminismError | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._invoking: set[asyncio.Task[Any] | None] = set()  # coroutines inside a task's handler
        self.outcome: Outcome | None = None
        # A pause was requested (see the module docstring); task attempts under way, and when none is.
        self.pause_requested = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.run = Run(self, {name: e.type for name, e in version.events.items()})

    @property
    def revision(self) -> int:
        """The run revision this execution holds (its fencing token)."""
        return self.writer.revision

    @property
    def finished(self) -> bool:
        """True once no more writes may be made."""
        return self.writer.finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self.writer.finished = value

    def _pause_requested(self) -> None:
        self.pause_requested = True

    # -- the workflow as a whole --------------------------------------------------------------

    async def execute(self) -> None:
        """Replay the workflow and send its outcome; never raises except on cancellation."""
        try:
            await self._execute()
        except (_Suspend, _Abandon):
            pass
        finally:
            if not self.writer.closing:  # a hand-back stops the sibling coroutines itself
                self._stop()

    def _stop(self) -> None:
        self.finished = True
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current and not t.done():
                t.cancel()

    async def _execute(self) -> None:
        version = self.version
        try:
            args: tuple[Any, ...] = (self.run,)
            if version.takes_input:
                args += (serde.decode(self.activation.input, version.input_type),)
        except ValidationError as e:
            await self._fail(e)
            return
        deadline = asyncio.timeout(self._time_left())
        try:
            async with deadline:
                output = await version.fn(*args)
            raw = serde.encode_checked(output, version.output_type)
        except TimeoutError as e:
            if deadline.expired() and self._fatal is None:
                info = error_info(e, cause="timeout")
                info.message = f"the run exceeded its execution time limit of {version.timeout}"
                await self._transition(Fail(run_id=self.run_id, revision=self.revision, error=info))
            else:
                await self._on_error(e)
            return
        except Exception as e:
            await self._on_error(e)
            return
        if self._fatal is not None:
            await self._fail(self._fatal)
            return
        try:
            await self._transition(Complete(run_id=self.run_id, revision=self.revision, output=msgspec.Raw(raw)))
        except PayloadTooLargeError as e:
            await self._fail(e)

    def _time_left(self) -> float | None:
        """Seconds until the run's execution deadline (the server enforces it too), if it has one."""
        deadline_at = self.activation.deadline_at
        if deadline_at is not None:
            return max(0.0, (deadline_at - now_ms()) / 1000)
        # A server that sends no deadline: limit this execution on its own.
        return None if self.version.timeout is None else self.version.timeout.total_seconds()

    async def _on_error(self, error: Exception) -> None:
        self.state.end_replay()  # the engine's own lines below are about this execution
        error = self._fatal or error
        wire = self.activation.retry
        policy = RetryPolicy.from_wire(wire) if wire is not None else self.version.retry
        attempt = self.activation.attempt
        if not isinstance(error, NonDeterminismError | ValidationError) and policy.should_retry(attempt, error):
            wake_at = now_ms() + _ms(policy.delay_for(attempt))
            self.run.logger.info("workflow attempt %d failed (%r); retrying", attempt, error)
            await self._transition(
                Retry(run_id=self.run_id, revision=self.revision, wake_at=wake_at, error=error_info(error))
            )
            return
        await self._fail(error)

    async def _fail(self, error: BaseException) -> None:
        self.state.end_replay()
        self.run.logger.info("run failed: %r", error)
        await self._transition(Fail(run_id=self.run_id, revision=self.revision, error=error_info(error)))

    # -- writes -------------------------------------------------------------------------------

    def _enter(self) -> None:
        """Called on every SDK entry point: track the coroutine, stop it if the execution is over."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        if self.finished or self.writer.closing:
            raise _Suspend

    # -- pause at the step boundary -----------------------------------------------------------

    def _attempt_began(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _attempt_ended(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()

    async def _boundary(self) -> None:
        """Called before new work (a task attempt, a child, a sleep): stop here if a pause is requested.

        Task attempts under way on sibling coroutines finish and are recorded first; then the run is
        released with a ``yield``. If it was resumed meanwhile the server says so and work goes on.
        """
        if not self.pause_requested:
            return
        while self._busy:
            await self._idle.wait()
        self._enter()
        if not self.pause_requested:
            return  # a sibling yielded and heard the run was resumed
        if await self._send_transition(Yield(run_id=self.run_id, revision=self.revision)) is None:
            raise _Suspend
        self.pause_requested = False

    async def _transition(self, command: Command) -> bool:
        """Send a transition; True if the run is suspended (or ended), after which nothing is written."""
        return await self._send_transition(command) is None

    async def _send_transition(self, command: Command) -> TransitionResponse | None:
        """Send a transition; its answer, or None if the run is suspended (or ended)."""
        passthrough: Passthrough = (PayloadTooLargeError,) if isinstance(command, Complete) else ()
        response = await self.writer.transition(command, passthrough)
        if response.child is not None:
            self.state.add_child(response.child)
        if response.suspended or command.ends_execution:
            self.finished = True
            self.outcome = _OUTCOMES.get(type(command), "suspended")
            return None
        self.state.add_events(response.events)
        return response

    async def _settle(self) -> None:
        """Yield until sibling coroutines stop consuming recorded entries."""
        last, stable = self.state.progress, 0
        while stable < _SETTLE_TICKS:
            await asyncio.sleep(0)
            if self.state.progress == last:
                stable += 1
            else:
                last, stable = self.state.progress, 0

    # -- SDK entry points ---------------------------------------------------------------------

    async def call_task(self, task: Task[Any, Any], input: Any) -> Any:
        """``task.start(run, input)``: replay the recorded entry or run new work."""
        self._enter()
        canonical = serde.canonical(input)
        address = serde.task_address(task.name, canonical)
        seq, record = self.state.next_task(address)
        attempt = 1
        if record is not None:
            if record.status == "completed":
                return serde.decode(record.output, task.output_type)
            if record.status == "failed":
                error = record.error or ErrorInfo(type="Error", message="task failed")
                raise TaskFailedError(task.name, error, run_id=self.run_id)
            if record.status == "awaiting_retry" and (record.next_attempt_at or 0) > now_ms():
                wait = AwaitTaskRetry(run_id=self.run_id, revision=self.revision, wake_at=record.next_attempt_at)
                if await self._transition(wait):
                    raise _Suspend
            # Due for retry, or "running" (interrupted by a crash): the next attempt runs now.
            attempt = record.attempts + 1
        else:
            await self._settle()
            self._enter()
            self._check_determinism(address)
        await self.writer.confirm_lease()
        return await self._run_attempts(task, input, canonical, address, seq, attempt)

    def _check_determinism(self, address: str) -> None:
        """New work at ``address`` is reached: fail the run if recorded entries are still unconsumed."""
        entries = [(t.address, t.seq, t.name) for t in self.state.unconsumed()]
        entries += [(c.address, c.seq, f"{c.workflow}@{c.version}") for c in self.state.unconsumed_children()]
        if entries:
            self._fatal = NonDeterminismError(sorted(entries), address=address, run_id=self.run_id)
            raise self._fatal

    async def _run_attempts(
        self, task: Task[Any, Any], input: Any, canonical: bytes, address: str, seq: int, attempt: int
    ) -> Any:
        raw_input = msgspec.Raw(canonical)
        # New work: an earlier task's record must be durable before this one runs.
        await self.writer.flush()

        def entry(status: Literal["completed", "failed", "awaiting_retry"], **fields: Any) -> RecordTask:
            return RecordTask(
                run_id=self.run_id,
                revision=self.revision,
                address=address,
                seq=seq,
                name=task.name,
                status=status,
                attempts=attempt,
                input=raw_input,
                **fields,
            )

        while True:
            self._enter()
            await self._boundary()
            # The attempt runs and its outcome is recorded before a pause can stop the execution.
            self._attempt_began()
            try:
                limit = asyncio.timeout(None if task.timeout is None else task.timeout.total_seconds())
                current = asyncio.current_task()
                try:
                    self._invoking.add(current)
                    try:
                        async with limit:
                            output = await task.invoke(input)
                    finally:
                        self._invoking.discard(current)
                    raw = serde.encode_checked(output, task.output_type)
                except asyncio.CancelledError:
                    if self.writer.closing:  # handed back: this attempt is not recorded
                        raise _Suspend from None
                    raise
                except Exception as e:
                    error = error_info(e)
                    if isinstance(e, TimeoutError) and limit.expired():
                        # The handler was cancelled at its limit; the attempt counts as failed.
                        error.message = f"task {task.name!r} exceeded its timeout of {task.timeout}"
                        error.cause = "timeout"
                    if task.retry.should_retry(attempt, e):
                        next_at = now_ms() + _ms(task.retry.delay_for(attempt))
                        await self.writer.record(entry("awaiting_retry", error=error, next_attempt_at=next_at))
                        wait = AwaitTaskRetry(run_id=self.run_id, revision=self.revision, wake_at=next_at)
                        if await self._transition(wait):
                            raise _Suspend from None
                        attempt += 1
                        continue
                    await self.writer.record(entry("failed", error=error))
                    raise TaskFailedError(task.name, error, run_id=self.run_id) from e
                try:
                    await self.writer.record_completed(
                        entry("completed", output=msgspec.Raw(raw)), len(raw) + len(canonical)
                    )
                except PayloadTooLargeError as e:
                    error = error_info(e)
                    await self.writer.record(entry("failed", error=error))
                    raise TaskFailedError(task.name, error, run_id=self.run_id) from e
                return serde.decode(raw, task.output_type)
            finally:
                self._attempt_ended()

    async def sleep(self, duration: timedelta, name: str) -> SleepResult:
        """``run.sleep()``: return a recorded sleep's outcome or suspend until it ends."""
        self._enter()
        seq, record = self.state.next_sleep(name)
        if record is not None and record.status != "sleeping":
            return SleepResult(cancelled=record.status == "cancelled")
        if record is None:
            await self._boundary()
        # A sleep already recorded as sleeping keeps its deadline: ask only for what remains.
        duration_ms = _ms(duration) if record is None else max(0, record.wake_at - now_ms())
        # A short new sleep on a worker with slots to spare is held: waited for here, without a claim
        # and a replay (see _run_writer.py). It is recorded all the same; were this process lost, the
        # server would wake the run shortly after the sleep's end and it would be replayed.
        hold = record is None and self.writer.may_hold(duration_ms)
        command = Sleep(run_id=self.run_id, revision=self.revision, name=name, seq=seq, duration_ms=duration_ms)
        command.hold = hold
        if await self._transition(command):
            raise _Suspend
        return SleepResult(cancelled=False)

    async def wait_event(self, name: str, type: Any, timeout: timedelta | None) -> EventResult[Any]:
        """``run.events.X.wait()``: return a buffered event or timeout, or suspend until one comes."""
        self._enter()
        seq, outcome = self.state.next_wait(name)
        if outcome is None:
            wait = AwaitEvent(
                run_id=self.run_id,
                revision=self.revision,
                event=name,
                wait_seq=seq,
                consumed=self.state.consumed(name),
                timeout_ms=None if timeout is None else _ms(timeout),
            )
            if await self._transition(wait):
                raise _Suspend
            outcome = self.state.take_event(name)
            if outcome is None:
                log.error("run %s: server did not suspend but sent no %r event; abandoning", self.run_id, name)
                self.finished = True
                raise _Abandon
        if outcome == TIMED_OUT:
            return EventResult(timeout=True)
        return EventResult(data=serde.decode(outcome.data, type))

    async def start_child(self, version: WorkflowVersion[Any, Any], input: Any) -> ChildHandle[Any]:
        """``version.start_as_child(run, input)``: the recorded child, or a new one started now."""
        self._enter()
        raw = serde.encode_checked(input, version.input_type)
        address = serde.task_address(f"child:{version.name}@{version.version}", serde.canonical(input))
        seq, record = self.state.next_child(address)
        if record is None:
            await self._settle()
            self._enter()
            self._check_determinism(address)
            # New work: an earlier task's record is durable first (its answer may say a pause is
            # requested: then no child starts).
            await self.writer.flush()
            while True:
                await self._boundary()
                command = commands.start_child(self.run_id, address, seq, version, raw)
                response = await self.writer.start_child(command, _CHILD_PASSTHROUGH)
                if response.child is not None:
                    break
                # A pause committed before this start reached the server (the watch had yet to say
                # so): no child was started. Stop at this boundary as at any other; if the run was
                # resumed meanwhile, start it now.
                self.pause_requested = True
            record = response.child
            self.state.add_child(record)
            self.state.consumed_children.add((address, seq))
        return ChildHandle(self, record, version.output_type)

    async def wait_child(self, child_id: str, output_type: Any, timeout: timedelta | None) -> ChildResult[Any]:
        """``child.wait_for_status()``: the child's terminal outcome, a recorded timeout, or suspend."""
        self._enter()
        seq, timed_out = self.state.next_child_wait(child_id)
        if timed_out:
            return ChildResult(timeout=True)
        record = self.state.child_by_id[child_id]
        if record.status not in TERMINAL_STATUSES:
            wait = AwaitChild(
                run_id=self.run_id,
                revision=self.revision,
                child_run_id=child_id,
                wait_seq=seq,
                timeout_ms=None if timeout is None else _ms(timeout),
            )
            if await self._transition(wait):
                raise _Suspend
            record = self.state.child_by_id[child_id]
            if record.status not in TERMINAL_STATUSES:
                log.error(
                    "run %s: server did not suspend but child %s has not ended; abandoning", self.run_id, child_id
                )
                self.finished = True
                raise _Abandon
        return _child_result(record, output_type)


def _child_result(record: ChildRecord, output_type: Any) -> ChildResult[Any]:
    if record.status == "completed":
        return ChildResult(status="completed", output=serde.decode(record.output, output_type))
    return ChildResult(status=record.status, error=record.error)
