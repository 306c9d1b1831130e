"""Definitions: ``task``, ``workflow``, ``event`` and what they build."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from aiki.worker_sdk import serde
from aiki.worker_sdk.errors import RunNotFoundError, ValidationError
from aiki.worker_sdk.protocol import ConflictPolicy, StartRunRequest
from aiki.worker_sdk.retry import RetryPolicy

if TYPE_CHECKING:
    from aiki.worker_sdk.client import Client, RunHandle
    from aiki.worker_sdk.run import ChildHandle, Run

I = TypeVar("I")  # noqa: E741 - the conventional name for an input type
O = TypeVar("O")  # noqa: E741
T = TypeVar("T")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        # Unresolvable annotations degrade to untyped payloads rather than failing at import.
        return {}


def _params(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return [
        p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


@dataclass(frozen=True, slots=True)
class EventDefinition(Generic[T]):
    """An event a workflow version can wait for, with its payload type.

    Attributes:
        type: The payload type (``Any`` when untyped).
    """

    type: Any = Any


def event(type: Any = Any) -> EventDefinition[Any]:
    """Declare an event of a workflow version.

    Args:
        type: The payload type; omit for an untyped (``Any``) payload.

    Returns:
        The definition to put in ``workflow.v(..., events={"name": event(...)})``.
    """
    return EventDefinition(type)


class Task(Generic[I, O]):
    """A memoized unit of work, built by :func:`task`.

    Calling the object calls the plain function (handy in unit tests); :meth:`start` runs it
    durably inside a workflow.

    Attributes:
        name: The task's stable name (part of its address).
        retry: Retry policy of failed attempts.
        timeout: Per-attempt time limit, if any.
        input_type: The annotated input type (``Any`` if none).
        output_type: The annotated return type (``Any`` if none).
        takes_input: Whether the handler takes an input argument.
    """

    def __init__(self, fn: Callable[..., Any], name: str, retry: RetryPolicy | None, timeout: timedelta | None) -> None:
        params = _params(fn)
        if len(params) > 1:
            raise TypeError(f"task {name!r}: the handler takes at most one input argument")
        hints = _hints(fn)
        self.fn = fn
        self.name = name
        self.retry = retry or RetryPolicy.never()
        self.timeout = timeout
        self.takes_input = bool(params)
        self.input_type: Any = hints.get(params[0].name, Any) if params else Any
        self.output_type: Any = hints.get("return", Any)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    async def invoke(self, input: Any) -> Any:
        """Run one attempt of the handler (async directly, sync in a worker thread)."""
        args = (input,) if self.takes_input else ()
        if self.is_async:
            return await self.fn(*args)
        return await asyncio.to_thread(self.fn, *args)

    async def start(self, run: Run, input: I | None = None) -> O:
        """Run the task durably inside a workflow and return its output.

        On replay a completed call returns its recorded output without running the handler.

        Args:
            run: The workflow's run context.
            input: The task input (omit for a handler without input).

        Raises:
            TaskFailedError: The task failed and its retry policy is spent.
        """
        result: O = await run._call_task(self, input)
        return result

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"


class _TaskDecorator:
    def __init__(self, name: str | None, retry: RetryPolicy | None, timeout: timedelta | None) -> None:
        self.name, self.retry, self.timeout = name, retry, timeout

    @overload
    def __call__(self, fn: Callable[[I], Awaitable[O]]) -> Task[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[], Awaitable[O]]) -> Task[None, O]: ...
    @overload
    def __call__(self, fn: Callable[[I], O]) -> Task[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[], O]) -> Task[None, O]: ...
    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        return Task(fn, self.name or fn.__name__, self.retry, self.timeout)


def task(
    name: str | None = None, *, retry: RetryPolicy | None = None, timeout: timedelta | None = None
) -> _TaskDecorator:
    """Declare a task.

    Args:
        name: Stable name of the task (defaults to the function name). Renaming a task changes
            its address, so recorded results no longer match.
        retry: Retry policy of failed attempts (default: :meth:`RetryPolicy.never`, one attempt).
        timeout: Time limit of one attempt; an attempt that exceeds it fails with ``TimeoutError``.

    Returns:
        A decorator for an async or sync function of zero or one argument.
    """
    return _TaskDecorator(name, retry, timeout)


@dataclass(frozen=True, slots=True)
class StartOptions:
    """Options of one start; see :meth:`WorkflowVersion.with_options`."""

    reference_id: str | None = None
    conflict: ConflictPolicy = "error"
    delay: timedelta | None = None
    retry: RetryPolicy | None = None
    pool: str | None = None
    require_registered: bool = False

    @property
    def delay_ms(self) -> int | None:
        return None if self.delay is None else int(self.delay.total_seconds() * 1000)


class WorkflowVersion(Generic[I, O]):
    """One version of a workflow, built by ``workflow(name).v(version)``.

    Attributes:
        name: The workflow name.
        version: The version string.
        events: Event definitions by name.
        retry: Workflow retry policy (default one attempt).
        timeout: Execution time limit of a run (wall-clock from its first claim).
        input_type: The annotated input type (``Any`` if none).
        output_type: The annotated return type (``Any`` if none).
    """

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        name: str,
        version: str,
        events: dict[str, EventDefinition[Any]],
        retry: RetryPolicy | None,
        timeout: timedelta | None,
        options: StartOptions | None = None,
    ) -> None:
        params = _params(fn)
        if not 1 <= len(params) <= 2:
            raise TypeError(f"workflow {name}@{version}: the handler takes (run) or (run, input)")
        hints = _hints(fn)
        self.fn = fn
        self.name = name
        self.version = version
        self.events = dict(events)
        self.retry = retry or RetryPolicy.never()
        self.timeout = timeout
        self.takes_input = len(params) == 2
        self.input_type: Any = hints.get(params[1].name, Any) if self.takes_input else Any
        self.output_type: Any = hints.get("return", Any)
        self._options = options or StartOptions()
        self.__doc__ = fn.__doc__

    def with_options(
        self,
        *,
        reference_id: str | None = None,
        conflict: ConflictPolicy = "error",
        delay: timedelta | None = None,
        retry: RetryPolicy | None = None,
        pool: str | None = None,
        require_registered: bool = False,
    ) -> WorkflowVersion[I, O]:
        """A copy of this version whose starts use these options.

        The options apply wherever the copy starts a run: :meth:`start`, :meth:`start_as_child`
        and :meth:`Schedule.activate <aiki.worker_sdk.schedules.Schedule.activate>` (which
        refuses the ones a schedule cannot honour, see there). None is ever dropped silently.

        Args:
            reference_id: Idempotency key: the same reference and input returns the existing run.
            conflict: On the same reference with a different input: ``"error"`` raises
                ``ReferenceConflictError``, ``"return_existing"`` returns the existing run.
            delay: Start the run this much later.
            retry: Workflow retry policy for this run (overrides the version's).
            pool: Worker pool whose workers may claim the run (only workers that list it in
                ``worker(pools=...)``). None or ``"default"``: the default pool, served by workers
                that name no pools.
            require_registered: Refuse the start with ``WorkflowNotFoundError`` when no worker has
                registered this version yet. By default such a start is accepted and the run
                waits in ``queued`` until a worker that serves the version comes (so a producer
                can be deployed before its workers, as in Temporal and DBOS); its input is then
                checked by that worker, and a run whose input does not fit fails with a
                ``ValidationError`` naming the field. A run no worker claims becomes
                ``stalled`` after the server's stall age, like any unserved run.
        """
        options = replace(
            self._options,
            reference_id=reference_id,
            conflict=conflict,
            delay=delay,
            retry=retry,
            pool=pool,
            require_registered=require_registered,
        )
        return WorkflowVersion(self.fn, self.name, self.version, self.events, self.retry, self.timeout, options)

    async def start(self, client: Client, input: I | None = None) -> RunHandle[O]:
        """Start a run of this version.

        Args:
            client: The Aiki client.
            input: The run input; it must fit the handler's annotation.

        A version no worker has registered yet is accepted by default (the run waits in
        ``queued`` for a worker); see ``with_options(require_registered=True)`` for the strict check.

        Raises:
            ValidationError: The input does not fit its type (no request is sent).
            ReferenceConflictError: The reference id is taken by a run with another input.
            WorkflowNotFoundError: No worker registered this version yet, and the start was made
                with ``with_options(require_registered=True)``.
        """
        raw = serde.encode_checked(input, self.input_type)
        o = self._options
        request = StartRunRequest(
            workflow=self.name,
            version=self.version,
            input=msgspec.Raw(raw),
            reference_id=o.reference_id,
            conflict=o.conflict,
            delay_ms=o.delay_ms,
            retry=None if o.retry is None else o.retry.to_wire(),
            pool=o.pool,
            require_registered=o.require_registered,
        )
        response = await client.start_run(request)
        return self._handle(client, response.run.id)

    async def start_as_child(self, run: Run, input: I | None = None) -> ChildHandle[O]:
        """Start a run of this version as a child of the workflow run ``run``.

        Memoized like a task: the ``n``-th start with the same version and input is the same child
        in every replay, so replaying the parent never starts a second one. The start is fenced by
        the parent's revision. The child runs on any worker (in parallel with its siblings), in
        the parent's worker pool unless ``with_options(pool=...)`` names another; cancelling the
        parent cancels it.

        Every option of :meth:`with_options` applies: ``delay`` starts the child later,
        ``retry`` and ``pool`` are the child's, and ``reference_id`` names the child, so
        :meth:`get_handle_by_reference` finds it and a client start with the same reference and
        input returns it instead of starting a second run. A reference that already names a child
        of the same parent returns that child (same input, or ``conflict="return_existing"``);
        one naming any other run raises ``ReferenceConflictError`` (a child cannot adopt a run
        started elsewhere). Like an unregistered version's start, a child of a version no worker
        registered yet waits in ``queued`` unless ``require_registered=True``.

        Args:
            run: The parent workflow's run context.
            input: The child's input; it must fit this version's input type.

        Returns:
            A :class:`ChildHandle`; ``await child.wait_for_status("completed")`` waits for it durably.

        Raises:
            ValidationError: The input does not fit this version's input type.
            ReferenceConflictError: The reference id names another run (see above).
            WorkflowNotFoundError: No worker registered this version and the start was made with
                ``with_options(require_registered=True)``.
        """
        handle: ChildHandle[O] = await run._start_child(self, input)
        return handle

    async def get_handle(self, client: Client, run_id: str) -> RunHandle[O]:
        """A handle on an existing run of this version.

        Raises:
            RunNotFoundError: No such run of this workflow version.
        """
        view = await client.get_run(run_id)
        if (view.workflow, view.version) != (self.name, self.version):
            raise RunNotFoundError(f"run {run_id} is not a run of {self.name}@{self.version}", run_id=run_id)
        return self._handle(client, view.id)

    async def get_handle_by_reference(self, client: Client, reference_id: str) -> RunHandle[O]:
        """A handle on the run of this version started with ``reference_id``.

        Raises:
            RunNotFoundError: No run of this version has that reference.
        """
        view = await client.find_run_by_reference(self.name, self.version, reference_id)
        return self._handle(client, view.id)

    def _handle(self, client: Client, run_id: str) -> RunHandle[O]:
        from aiki.worker_sdk.client import RunHandle

        return RunHandle(client, run_id, self.output_type, {k: e.type for k, e in self.events.items()})

    def event_type(self, name: str) -> Any:
        """The payload type of event ``name``.

        Raises:
            ValidationError: The version declares no such event.
        """
        try:
            return self.events[name].type
        except KeyError:
            raise ValidationError(f"{self.name}@{self.version} declares no event {name!r}", field=name) from None

    def __repr__(self) -> str:
        return f"<WorkflowVersion {self.name}@{self.version}>"


class _VersionDecorator:
    def __init__(self, build: Callable[[Callable[..., Awaitable[Any]]], WorkflowVersion[Any, Any]]) -> None:
        self._build = build

    @overload
    def __call__(self, fn: Callable[[Run, I], Awaitable[O]]) -> WorkflowVersion[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[Run], Awaitable[O]]) -> WorkflowVersion[None, O]: ...
    def __call__(self, fn: Callable[..., Awaitable[Any]]) -> WorkflowVersion[Any, Any]:
        return self._build(fn)


class Workflow:
    """A named workflow; each :meth:`v` declares one version.

    Attributes:
        name: The workflow name.
        versions: Declared versions by version string.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[str, WorkflowVersion[Any, Any]] = {}

    def v(
        self,
        version: str,
        *,
        events: dict[str, EventDefinition[Any]] | None = None,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> _VersionDecorator:
        """Declare a version; decorate its handler ``async def (run: Run, input: T) -> O``.

        Args:
            version: The version string, e.g. ``"1.0.0"``. Runs stay on the version they started on.
            events: Events the version waits for, e.g. ``{"payment_received": event()}``.
            retry: Workflow retry policy (default: one attempt).
            timeout: Execution time limit of each run, wall-clock from the run's first claim and
                counting time asleep, waiting or paused. The server fails the run with cause
                ``timeout`` when it passes, wherever the run is (a hung or lost worker cannot hold
                it); the worker also cancels the handler at that moment.
        """

        def build(fn: Callable[..., Awaitable[Any]]) -> WorkflowVersion[Any, Any]:
            wv: WorkflowVersion[Any, Any] = WorkflowVersion(fn, self.name, version, events or {}, retry, timeout)
            self.versions[version] = wv
            return wv

        return _VersionDecorator(build)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}>"


def workflow(name: str) -> Workflow:
    """Declare a workflow by name; declare its versions with ``.v(version)``."""
    return Workflow(name)
