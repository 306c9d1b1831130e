"""Replay bookkeeping and the workflow's view of it: :class:`Run`.

:class:`ReplayState` is sans-IO: it indexes an activation's recorded tasks, sleeps, events and wait
timeouts, and hands them out in replay order (per-address FIFO for tasks, per-name cursors for
sleeps and waits). The execution (``execution.py``) does the IO around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from aiki.worker_sdk.client import as_timedelta
from aiki.worker_sdk.protocol import (
    TERMINAL_STATUSES,
    Activation,
    ChildRecord,
    ErrorInfo,
    EventRecord,
    SleepRecord,
    TaskRecord,
)

if TYPE_CHECKING:
    from aiki.worker_sdk.definitions import Task, WorkflowVersion
    from aiki.worker_sdk.execution import Execution

T = TypeVar("T")
TIMED_OUT: Literal["timed_out"] = "timed_out"


@dataclass(frozen=True, slots=True)
class SleepResult:
    """The outcome of ``run.sleep()``.

    Attributes:
        cancelled: True when the sleep was ended early (``handle.wake()``).
    """

    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class EventResult(Generic[T]):
    """The outcome of ``run.events.<name>.wait()``.

    Attributes:
        data: The event payload (None when the wait timed out).
        timeout: True when the wait ended by its timeout.
    """

    data: T | None = None
    timeout: bool = False


@dataclass(frozen=True, slots=True)
class ChildResult(Generic[T]):
    """The outcome of ``child.wait_for_status()`` inside a workflow.

    Attributes:
        status: The terminal status the child reached (``completed``, ``failed``, ``cancelled``),
            or None when the wait timed out.
        timeout: True when the wait ended by its timeout (the child may still be running).
        output: The child's output, decoded to its version's return type, when it completed.
        error: The child's recorded error when it failed or was cancelled.
    """

    status: str | None = None
    timeout: bool = False
    output: T | None = None
    error: ErrorInfo | None = None

    @property
    def completed(self) -> bool:
        """True when the child completed."""
        return self.status == "completed"


_PASSING: Literal["passing"] = "passing"
_SUSPENDING: Literal["suspending"] = "suspending"
_Step = Literal["passing", "suspending"] | None


class ReplayState:
    """Cursors over one activation's recorded history.

    Attributes:
        progress: Bumped on every consumption of a recorded entry; the engine watches it to let
            sibling coroutines consume their entries before it declares new work.
        replaying: True while the workflow code re-executes what an earlier execution of the run
            already executed (``run.logger`` is silent meanwhile). See :meth:`_stepped`.
    """

    def __init__(self, activation: Activation) -> None:
        self.tasks: dict[tuple[str, int], TaskRecord] = {
            (t.address, t.seq): t for t in activation.tasks if t.status != "discarded"
        }
        self.task_cursor: dict[str, int] = {}
        self.consumed_tasks: set[tuple[str, int]] = set()
        self.sleeps: dict[tuple[str, int], SleepRecord] = {(s.name, s.seq): s for s in activation.sleeps}
        self.sleep_cursor: dict[str, int] = {}
        self.events: dict[str, list[EventRecord]] = {}
        self._event_ids: set[str] = set()
        self.add_events(activation.events)
        self.events_consumed: dict[str, int] = {}
        self.wait_cursor: dict[str, int] = {}
        self.wait_timeouts: set[tuple[str, int]] = {(w.name, w.seq) for w in activation.wait_timeouts}
        self.children: dict[tuple[str, int], ChildRecord] = {(c.address, c.seq): c for c in activation.children}
        self.child_by_id: dict[str, ChildRecord] = {c.run_id: c for c in activation.children}
        self.child_cursor: dict[str, int] = {}
        self.consumed_children: set[tuple[str, int]] = set()
        self.progress = 0
        self._consumed_sleeps: set[tuple[str, int]] = set()
        self._consumed_timeouts: set[tuple[str, int]] = set()
        # Where earlier executions got to: their recorded steps, and the last wait the run
        # suspended on (a wait leaves no record of its own unless it timed out).
        resumed = activation.resumed_wait
        self._resumed_wait = None if resumed is None else (resumed.name, resumed.seq)
        self.replaying = bool(self.tasks or self.sleeps or self.children or self.wait_timeouts or resumed)
        self._past_records = False
        self._frontier_pending = False

    def _remaining(self) -> int:
        """Recorded steps (tasks, child starts, sleeps, wait timeouts) no call has reached yet.

        May go below zero: a child found by its reference id is consumed at an entry other than
        its own.
        """
        return (
            len(self.tasks)
            - len(self.consumed_tasks)
            + len(self.children)
            - len(self.consumed_children)
            + len(self.sleeps)
            - len(self._consumed_sleeps)
            + len(self.wait_timeouts)
            - len(self._consumed_timeouts)
        )

    def _stepped(self, recorded: _Step, wait: tuple[str, int] | None = None, new_work: bool = False) -> None:
        """The workflow reached a step: end the replay once it is past every earlier execution.

        Earlier executions got at least as far as the last recorded step, and as far as the
        wait the run last suspended on (``resumed_wait``). The replay ends once both are
        reached: when the last recorded step is one an execution stopped at (``suspending``: a
        sleep, a wait timeout, a task awaiting a retry or interrupted by a crash), right there;
        when it is one an execution went on from (``passing``: a completed or failed task, a
        child start), at the next step, since the code up to that step ran before (then the
        execution was lost). New work (a task, child or sleep with no record) always ends it.
        Where this cannot tell, it errs toward logging a line again rather than never.
        """
        if not self.replaying:
            return
        if wait is not None and wait == self._resumed_wait:
            self._resumed_wait = None
        if new_work:
            self.replaying = False
            return
        if not self._past_records:
            if self._frontier_pending:
                self._past_records = True
            elif self._remaining() <= 0:
                if recorded == _PASSING:
                    self._frontier_pending = True
                else:
                    self._past_records = True
        if self._past_records and self._resumed_wait is None:
            self.replaying = False

    def end_replay(self) -> None:
        """The workflow is done with its history (it ended, or failed): nothing is replay now."""
        self.replaying = False

    def next_task(self, address: str) -> tuple[int, TaskRecord | None]:
        """Take the next call at ``address``: its ``seq`` and recorded entry, if any."""
        seq = self.task_cursor.get(address, 0)
        self.task_cursor[address] = seq + 1
        record = self.tasks.get((address, seq))
        if record is not None:
            self.consumed_tasks.add((address, seq))
            self.progress += 1
            self._stepped(_PASSING if record.status in ("completed", "failed") else _SUSPENDING)
        else:
            self._stepped(None, new_work=True)
        return seq, record

    def unconsumed(self) -> list[TaskRecord]:
        """Recorded (non-discarded) task entries no call has reached yet, by address and seq."""
        if len(self.consumed_tasks) == len(self.tasks):
            return []  # the common case, checked on every new task: no sort of the whole history
        return [t for key, t in sorted(self.tasks.items()) if key not in self.consumed_tasks]

    def next_child(self, address: str) -> tuple[int, ChildRecord | None]:
        """Take the next child start at ``address``: its ``seq`` and recorded child, if any."""
        seq = self.child_cursor.get(address, 0)
        self.child_cursor[address] = seq + 1
        record = self.children.get((address, seq))
        if record is not None:
            self.consumed_children.add((address, seq))
            self.progress += 1
        self._stepped(_PASSING if record is not None else None, new_work=record is None)
        return seq, record

    def add_child(self, record: ChildRecord) -> None:
        """Remember a child (just started, or as the server last reported it)."""
        self.children[(record.address, record.seq)] = record
        self.child_by_id[record.run_id] = record

    def unconsumed_children(self) -> list[ChildRecord]:
        """Recorded child starts no call has reached yet, by address and seq."""
        if len(self.consumed_children) == len(self.children):
            return []
        return [c for key, c in sorted(self.children.items()) if key not in self.consumed_children]

    def next_child_wait(self, child_id: str) -> tuple[int, bool]:
        """Take the next wait on ``child_id``: its ``seq`` and whether it is recorded as timed out."""
        name = "@child:" + child_id
        seq = self.wait_cursor.get(name, 0)
        self.wait_cursor[name] = seq + 1
        timed_out = (name, seq) in self.wait_timeouts
        if timed_out:
            self._consumed_timeouts.add((name, seq))
        self._stepped(_SUSPENDING if timed_out else None, wait=(name, seq))
        return seq, timed_out

    def next_sleep(self, name: str) -> tuple[int, SleepRecord | None]:
        """Take the next sleep named ``name``: its ``seq`` and recorded row, if any."""
        seq = self.sleep_cursor.get(name, 0)
        self.sleep_cursor[name] = seq + 1
        record = self.sleeps.get((name, seq))
        if record is not None:
            self.progress += 1
            self._consumed_sleeps.add((name, seq))
        self._stepped(_SUSPENDING if record is not None else None, new_work=record is None)
        return seq, record

    def add_events(self, records: list[EventRecord]) -> None:
        """Buffer events (ignoring ones already known), keeping each name in arrival order."""
        touched: set[str] = set()
        for record in records:
            if record.id in self._event_ids:
                continue
            self._event_ids.add(record.id)
            self.events.setdefault(record.name, []).append(record)
            touched.add(record.name)
        for name in touched:
            self.events[name].sort(key=lambda r: r.seq)

    def consumed(self, name: str) -> int:
        """How many events named ``name`` the replay has consumed."""
        return self.events_consumed.get(name, 0)

    def take_event(self, name: str) -> EventRecord | None:
        """The next unconsumed buffered event named ``name``, consuming it."""
        index = self.consumed(name)
        buffered = self.events.get(name, [])
        if index >= len(buffered):
            return None
        self.events_consumed[name] = index + 1
        self.progress += 1
        return buffered[index]

    def next_wait(self, name: str) -> tuple[int, EventRecord | Literal["timed_out"] | None]:
        """Take the next wait on ``name``: its ``seq`` and outcome (event, timed out, or None)."""
        seq = self.wait_cursor.get(name, 0)
        self.wait_cursor[name] = seq + 1
        if (name, seq) in self.wait_timeouts:
            self.progress += 1
            self._consumed_timeouts.add((name, seq))
            self._stepped(_SUSPENDING, wait=(name, seq))
            return seq, TIMED_OUT
        event = self.take_event(name)
        self._stepped(None, wait=(name, seq))
        return seq, event


class EventWaiter(Generic[T]):
    """Waits for one named event inside a workflow: ``run.events.<name>``."""

    def __init__(self, execution: Execution, name: str, type: Any) -> None:
        self._execution, self.name, self._type = execution, name, type

    async def wait(self, timeout: timedelta | float | None = None) -> EventResult[T]:
        """Wait durably for the next event of this name.

        Events sent before the wait are buffered and returned in arrival order. While none is
        buffered the run suspends and the worker is released.

        Args:
            timeout: Give up after this long: a ``timedelta`` or seconds as a number (None: wait
                without limit).

        Returns:
            ``EventResult(data=...)``, or ``EventResult(timeout=True)``.

        Raises:
            TypeError: ``timeout`` is neither a number, a ``timedelta`` nor None.
        """
        limit = as_timedelta(timeout, "timeout")
        result: EventResult[T] = await self._execution.wait_event(self.name, self._type, limit)
        return result


class ChildHandle(Generic[T]):
    """A child run started by ``version.start_as_child(run, input)``; usable only inside its parent.

    Attributes:
        id: The child run's id.
        workflow: The child's workflow name.
        version: The child's workflow version.
    """

    def __init__(self, execution: Execution, record: ChildRecord, output_type: Any) -> None:
        self._execution = execution
        self._output_type = output_type
        self.id = record.run_id
        self.workflow = record.workflow
        self.version = record.version

    async def wait_for_status(
        self, status: str | tuple[str, ...] | list[str] = "completed", timeout: timedelta | float | None = None
    ) -> ChildResult[T]:
        """Wait durably until the child ends; the parent suspends (``awaiting_child``) meanwhile.

        The parent is woken on *any* terminal status of the child, whichever ``status`` names:
        check ``result.status``. A failed or cancelled child does not raise here.

        Args:
            status: The terminal status (or statuses) hoped for: ``completed``, ``failed`` or ``cancelled``.
            timeout: Give up after this long, a ``timedelta`` or seconds as a number (None: wait
                without limit); ``result.timeout`` is then True.

        Returns:
            The :class:`ChildResult` (status reached, or timeout; output when completed).

        Raises:
            ValueError: ``status`` names a non-terminal status (waits on those would not replay
                deterministically).
            TypeError: ``timeout`` is neither a number, a ``timedelta`` nor None.
        """
        limit = as_timedelta(timeout, "timeout")
        wanted = (status,) if isinstance(status, str) else tuple(status)
        bad = [s for s in wanted if s not in TERMINAL_STATUSES]
        if bad:
            raise ValueError(f"a child can be awaited only for terminal statuses, not {bad[0]!r}")
        result: ChildResult[T] = await self._execution.wait_child(self.id, self._output_type, limit)
        return result

    def __repr__(self) -> str:
        return f"<ChildHandle {self.id} {self.workflow}@{self.version}>"


class _RunEvents:
    def __init__(self, execution: Execution, types: dict[str, Any]) -> None:
        self._execution, self._types = execution, types

    def __getattr__(self, name: str) -> EventWaiter[Any]:
        if name.startswith("_") or name not in self._types:
            raise AttributeError(f"the workflow version declares no event {name!r}")
        return EventWaiter(self._execution, name, self._types[name])


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``run.logger``: drops records while the run replays its history."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any], state: ReplayState | None) -> None:
        super().__init__(logger, extra)
        self._state = state

    def isEnabledFor(self, level: int) -> bool:
        if self._state is not None and self._state.replaying:
            return False
        return super().isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._state is not None and self._state.replaying:
            return
        super().log(level, msg, *args, **kwargs)


class Run:
    """The context a workflow handler receives as its first argument.

    Attributes:
        id: The run id.
        attempt: The workflow attempt (from 1; bumped by each workflow retry).
        workflow: The workflow name.
        version: The workflow version.
        reference_id: The reference id the run was started with, if any.
        logger: A logger bound to the run id, workflow and version (``extra``: ``run_id``,
            ``workflow``, ``version``). It is silent while the workflow replays what an earlier
            execution of the run already did (Temporal's rule), so a line is logged once, not
            again on every resume. After a crash the lines logged between the last recorded
            step and the crash may be logged again: a line is never lost.
        events: ``run.events.<name>.wait(timeout=...)`` waits for the declared event ``name``.
    """

    def __init__(self, execution: Execution, event_types: dict[str, Any]) -> None:
        activation = execution.activation
        self._execution = execution
        self.id = activation.run_id
        self.attempt = activation.attempt
        self.workflow = activation.workflow
        self.version = activation.version
        self.reference_id = activation.reference_id
        self.logger: logging.LoggerAdapter[logging.Logger] = _RunLogger(
            logging.getLogger("aiki.workflow"),
            {"run_id": self.id, "workflow": self.workflow, "version": self.version},
            getattr(execution, "state", None),
        )
        self.events = _RunEvents(execution, event_types)

    @property
    def replaying(self) -> bool:
        """True while the workflow re-executes what an earlier execution already did."""
        state = getattr(self._execution, "state", None)
        return bool(state is not None and state.replaying)

    async def sleep(self, duration: timedelta, name: str = "default") -> SleepResult:
        """Sleep durably: the run suspends and the worker is released until the time comes.

        Sleeps are matched on replay by name: the ``n``-th sleep of one name is the same sleep in
        every replay, so give distinct sleeps distinct names.

        A short sleep (at most the server's ``sleep_hold_max``, 1 s by default) on a worker with
        a free slot is waited out in memory instead: it is recorded the same way, and the run goes
        on without a claim and a replay, a few milliseconds after the time. Should the worker be
        lost meanwhile, the server wakes the run just after the sleep's end and another worker
        replays it.

        Args:
            duration: How long to sleep.
            name: The sleep's name (default ``"default"``).

        Returns:
            ``SleepResult(cancelled=True)`` if the sleep was ended early by ``handle.wake()``.
        """
        return await self._execution.sleep(duration, name)

    async def _call_task(self, task: Task[Any, Any], input: Any) -> Any:
        return await self._execution.call_task(task, input)

    async def _start_child(self, version: WorkflowVersion[Any, Any], input: Any) -> ChildHandle[Any]:
        return await self._execution.start_child(version, input)

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.workflow}@{self.version} attempt {self.attempt}>"
