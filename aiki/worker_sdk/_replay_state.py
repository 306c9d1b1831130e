"""Replay bookkeeping of one activation, sans-IO: :class:`ReplayState`.

:class:`ReplayState` indexes an activation's recorded tasks, sleeps, events, child starts and wait
timeouts, and hands them out in replay order (per-address FIFO for tasks and children, per-name
cursors for sleeps and waits). It does no I/O and knows no clock: the execution does the I/O
around it, and the workflow sees it only through :attr:`aiki.worker_sdk.run.Run.replaying`.
"""

from __future__ import annotations

from typing import Literal

from aiki.worker_sdk.protocol import Activation, ChildRecord, EventRecord, SleepRecord, TaskRecord

TIMED_OUT: Literal["timed_out"] = "timed_out"

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
