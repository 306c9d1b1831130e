"""Definitions: ``workflow``, ``event`` and what they build (``task`` is in :mod:`~aiki.worker_sdk.tasks`).

A workflow is a plain async function of a :class:`~aiki.worker_sdk.run.Run` (and an input),
declared as one version of a named :class:`Workflow`; a task is a memoized function it calls
through the run. Declaring either needs no server. This module imports no engine code: a
version's handler runs inside a worker's execution, which ``Run`` reaches through the
:class:`~aiki.worker_sdk._runtime.Runtime` protocol.

Example:
    >>> from aiki import Run, event, task, workflow
    >>> @task()
    ... async def charge(amount: int) -> str:
    ...     return f"charged {amount}"
    >>> orders = workflow("orders")
    >>> @orders.v("1.0.0", events={"shipped": event(str)})
    ... async def orders_v1(run: Run, amount: int) -> str:
    ...     receipt = await charge.start(run, amount)
    ...     shipped = await run.events.shipped.wait(timeout=3600)
    ...     return f"{receipt}, shipped by {shipped.data}"
    >>> orders_v1
    <WorkflowVersion orders@1.0.0>
    >>> orders.versions["1.0.0"] is orders_v1
    True
    >>> charge.input_type, charge.output_type
    (<class 'int'>, <class 'str'>)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from aiki.worker_sdk import serde
from aiki.worker_sdk._signatures import handler_hints, positional_params
from aiki.worker_sdk.errors import RunNotFoundError, ValidationError
from aiki.worker_sdk.protocol import ConflictPolicy, StartRunRequest
from aiki.worker_sdk.retry import RetryPolicy

# Tasks were declared here before they got their own module; the names stay importable from here.
from aiki.worker_sdk.tasks import Task as Task
from aiki.worker_sdk.tasks import task as task

if TYPE_CHECKING:
    from aiki.worker_sdk.client import Client, RunHandle
    from aiki.worker_sdk.run import ChildHandle, Run

I = TypeVar("I")  # noqa: E741 - the conventional name for an input type
O = TypeVar("O")  # noqa: E741
T = TypeVar("T")


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

    Example:
        >>> from aiki import event
        >>> event(int)
        EventDefinition(type=<class 'int'>)
        >>> event().type
        typing.Any
    """
    return EventDefinition(type)


@dataclass(frozen=True, slots=True)
class StartOptions:
    """Options of one start; see :meth:`WorkflowVersion.with_options`, which documents each.

    Attributes:
        reference_id: Idempotency key of the start, if any.
        conflict: What a start with a taken reference and another input does.
        delay: How much later the run starts.
        retry: The run's workflow retry policy (None: the version's).
        pool: The worker pool that may claim the run (None: the default pool).
        require_registered: Refuse the start when no worker registered the version.
    """

    reference_id: str | None = None
    conflict: ConflictPolicy = "error"
    delay: timedelta | None = None
    retry: RetryPolicy | None = None
    pool: str | None = None
    require_registered: bool = False

    @property
    def delay_ms(self) -> int | None:
        """``delay`` in whole milliseconds, as it travels (None when there is no delay)."""
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
        """Wrap ``fn``; use ``workflow(name).v(version)`` rather than this constructor.

        Raises:
            TypeError: ``fn`` takes neither ``(run)`` nor ``(run, input)``.
        """
        params = positional_params(fn)
        if not 1 <= len(params) <= 2:
            raise TypeError(f"workflow {name}@{version}: the handler takes (run) or (run, input)")
        hints = handler_hints(fn)
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

        Returns:
            A new version object; this one is unchanged.

        Example:
            >>> from datetime import timedelta
            >>> from aiki import Run, workflow
            >>> @workflow("report").v("1.0.0")
            ... async def report_v1(run: Run) -> None: ...
            >>> nightly = report_v1.with_options(reference_id="2024-06-01", delay=timedelta(hours=2))
            >>> nightly.with_options(pool="batch") is not nightly
            True
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
        A version no worker has registered yet is accepted by default (the run waits in
        ``queued`` for a worker); see ``with_options(require_registered=True)`` for the strict check.

        Args:
            client: The Aiki client.
            input: The run input; it must fit the handler's annotation.

        Returns:
            A :class:`~aiki.worker_sdk.client.RunHandle` on the new (or, by reference, existing) run.

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

        Args:
            client: The Aiki client.
            run_id: The run's id.

        Returns:
            A :class:`~aiki.worker_sdk.client.RunHandle` typed with this version's output.

        Raises:
            RunNotFoundError: No such run of this workflow version.
        """
        view = await client.get_run(run_id)
        if (view.workflow, view.version) != (self.name, self.version):
            raise RunNotFoundError(f"run {run_id} is not a run of {self.name}@{self.version}", run_id=run_id)
        return self._handle(client, view.id)

    async def get_handle_by_reference(self, client: Client, reference_id: str) -> RunHandle[O]:
        """A handle on the run of this version started with ``reference_id``.

        Args:
            client: The Aiki client.
            reference_id: The reference id the run was started with.

        Returns:
            A :class:`~aiki.worker_sdk.client.RunHandle` typed with this version's output.

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

        Args:
            name: The event's name.

        Returns:
            The type declared with :func:`event` (``Any`` when untyped).

        Raises:
            ValidationError: The version declares no such event.
        """
        try:
            return self.events[name].type
        except KeyError:
            raise ValidationError(f"{self.name}@{self.version} declares no event {name!r}", field=name) from None

    def __repr__(self) -> str:
        """``<WorkflowVersion name@version>``."""
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
        """Name a workflow; use :func:`workflow` rather than this constructor."""
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

        Returns:
            A decorator that turns the handler into a :class:`WorkflowVersion` of this workflow.

        Example:
            >>> from datetime import timedelta
            >>> from aiki import Run, RetryPolicy, workflow
            >>> billing = workflow("billing")
            >>> @billing.v("2.0.0", retry=RetryPolicy.fixed(2, timedelta(seconds=30)), timeout=timedelta(hours=1))
            ... async def billing_v2(run: Run, account: str) -> int:
            ...     return 0
            >>> billing_v2.version, billing_v2.input_type, billing_v2.timeout
            ('2.0.0', <class 'str'>, datetime.timedelta(seconds=3600))
        """

        def build(fn: Callable[..., Awaitable[Any]]) -> WorkflowVersion[Any, Any]:
            wv: WorkflowVersion[Any, Any] = WorkflowVersion(fn, self.name, version, events or {}, retry, timeout)
            self.versions[version] = wv
            return wv

        return _VersionDecorator(build)

    def __repr__(self) -> str:
        """``<Workflow 'name'>``."""
        return f"<Workflow {self.name!r}>"


def workflow(name: str) -> Workflow:
    """Declare a workflow by name; declare its versions with ``.v(version)``.

    Args:
        name: The workflow's stable name (runs, schedules and workers refer to it).

    Returns:
        The :class:`Workflow`, whose :meth:`Workflow.v` declares versions.

    Example:
        >>> from aiki import workflow
        >>> workflow("signup")
        <Workflow 'signup'>
    """
    return Workflow(name)
