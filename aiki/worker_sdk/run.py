"""The workflow's view of its run: :class:`Run`, its handles and the results of its waits.

A workflow handler receives a :class:`Run` as its first argument. Everything durable it does goes
through the run (``task.start(run, ...)``, ``run.sleep(...)``, ``run.events.<name>.wait()``,
``version.start_as_child(run, ...)``), which delegates to the engine through the small
:class:`~aiki.worker_sdk._runtime.Runtime` protocol; this module imports no engine code.

Example:
    >>> from datetime import timedelta
    >>> from aiki import Run, event, workflow
    >>> approvals = workflow("approvals")
    >>> @approvals.v("1.0.0", events={"decision": event(bool)})
    ... async def approvals_v1(run: Run, request: str) -> str:
    ...     run.logger.info("asking for %s", request)  # logged once, not again on replay
    ...     decision = await run.events.decision.wait(timeout=timedelta(days=2))
    ...     if decision.timeout:
    ...         await run.sleep(timedelta(hours=1), name="grace")
    ...         return "expired"
    ...     return "approved" if decision.data else "rejected"
    >>> sorted(approvals_v1.events)
    ['decision']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiki.worker_sdk.client import as_timedelta
from aiki.worker_sdk.protocol import TERMINAL_STATUSES, ChildRecord, ErrorInfo

if TYPE_CHECKING:
    from aiki.worker_sdk._runtime import ReplayView, Runtime
    from aiki.worker_sdk.definitions import WorkflowVersion
    from aiki.worker_sdk.tasks import Task

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SleepResult:
    """The outcome of ``run.sleep()``.

    Example:
        >>> from aiki import SleepResult
        >>> SleepResult().cancelled, SleepResult(cancelled=True).cancelled
        (False, True)

    Attributes:
        cancelled: True when the sleep was ended early (``handle.wake()``).
    """

    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class EventResult(Generic[T]):
    """The outcome of ``run.events.<name>.wait()``.

    Example:
        >>> from aiki import EventResult
        >>> EventResult(data={"amount": 5})
        EventResult(data={'amount': 5}, timeout=False)
        >>> EventResult(timeout=True).data is None
        True

    Attributes:
        data: The event payload (None when the wait timed out).
        timeout: True when the wait ended by its timeout.
    """

    data: T | None = None
    timeout: bool = False


@dataclass(frozen=True, slots=True)
class ChildResult(Generic[T]):
    """The outcome of ``child.wait_for_status()`` inside a workflow.

    A failed or cancelled child does not raise in its parent: check :attr:`completed` or
    :attr:`status`.

    Example:
        >>> from aiki import ChildResult
        >>> done = ChildResult(status="completed", output=3)
        >>> done.completed, done.output
        (True, 3)
        >>> ChildResult(timeout=True).completed
        False

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


class EventWaiter(Generic[T]):
    """Waits for one named event inside a workflow: ``run.events.<name>``.

    Attributes:
        name: The event's name, as declared in ``workflow.v(..., events={name: event(...)})``.
    """

    def __init__(self, runtime: Runtime, name: str, type: Any) -> None:
        """A waiter on the event ``name`` with payload ``type``; the run builds it (``run.events``)."""
        self._runtime, self.name, self._type = runtime, name, type

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
        result: EventResult[T] = await self._runtime.wait_event(self.name, self._type, limit)
        return result


class ChildHandle(Generic[T]):
    """A child run started by ``version.start_as_child(run, input)``; usable only inside its parent.

    Attributes:
        id: The child run's id.
        workflow: The child's workflow name.
        version: The child's workflow version.
    """

    def __init__(self, runtime: Runtime, record: ChildRecord, output_type: Any) -> None:
        """A handle on the child ``record``; :meth:`WorkflowVersion.start_as_child` builds it."""
        self._runtime = runtime
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
        result: ChildResult[T] = await self._runtime.wait_child(self.id, self._output_type, limit)
        return result

    def __repr__(self) -> str:
        """``<ChildHandle id workflow@version>``."""
        return f"<ChildHandle {self.id} {self.workflow}@{self.version}>"


class _RunEvents:
    """``run.events``: one :class:`EventWaiter` per event the workflow version declares."""

    def __init__(self, runtime: Runtime, types: dict[str, Any]) -> None:
        self._runtime, self._types = runtime, types

    def __getattr__(self, name: str) -> EventWaiter[Any]:
        if name.startswith("_") or name not in self._types:
            raise AttributeError(f"the workflow version declares no event {name!r}")
        return EventWaiter(self._runtime, name, self._types[name])


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``run.logger``: drops records while the run replays its history."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any], state: ReplayView) -> None:
        super().__init__(logger, extra)
        self._state = state

    def isEnabledFor(self, level: int) -> bool:
        if self._state.replaying:
            return False
        return super().isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._state.replaying:
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

    def __init__(self, runtime: Runtime, event_types: dict[str, Any]) -> None:
        """The run of the activation ``runtime`` executes; the worker builds it, not the workflow.

        Args:
            runtime: The engine executing the activation (see :class:`~aiki.worker_sdk._runtime.Runtime`).
            event_types: The payload type of each event the workflow version declares, by name.
        """
        activation = runtime.activation
        self._runtime = runtime
        self.id = activation.run_id
        self.attempt = activation.attempt
        self.workflow = activation.workflow
        self.version = activation.version
        self.reference_id = activation.reference_id
        self.logger: logging.LoggerAdapter[logging.Logger] = _RunLogger(
            logging.getLogger("aiki.workflow"),
            {"run_id": self.id, "workflow": self.workflow, "version": self.version},
            runtime.state,
        )
        self.events = _RunEvents(runtime, event_types)

    @property
    def replaying(self) -> bool:
        """True while the workflow re-executes what an earlier execution already did."""
        return self._runtime.state.replaying

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
        return await self._runtime.sleep(duration, name)

    async def _call_task(self, task: Task[Any, Any], input: Any) -> Any:
        return await self._runtime.call_task(task, input)

    async def _start_child(self, version: WorkflowVersion[Any, Any], input: Any) -> ChildHandle[Any]:
        return await self._runtime.start_child(version, input)

    def __repr__(self) -> str:
        """``<Run id workflow@version attempt n>``."""
        return f"<Run {self.id} {self.workflow}@{self.version} attempt {self.attempt}>"
