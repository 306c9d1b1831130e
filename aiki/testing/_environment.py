"""``WorkflowEnvironment``: an embedded server, a worker and a client, for one test."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import weakref
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import aiki
from aiki.testing import _database
from aiki.testing._records import SentEvent, TaskCall
from aiki.worker_sdk import ActionNotAllowedError, Client, RunHandle, WorkerHandle, WorkflowVersion
from aiki.worker_sdk.protocol import TERMINAL_STATUSES, ChildRun, HistoryEntry, RunDetail, RunView

if TYPE_CHECKING:
    from aiki import AikiServer

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

WAITING_STATUSES: frozenset[str] = frozenset({"sleeping", "awaiting_event", "awaiting_child", "awaiting_retry"})
"""The statuses of a run that waits for something outside it: a timer, an event, a child, a retry."""

RunRef = RunHandle[Any] | str
"""A run, by its handle or its id."""


class WorkflowEnvironment:
    """An Aiki server, a worker and a client in the test's own event loop, on a private database.

    The server is the real one (``aiki.server``), embedded: the client calls it in-process and
    its state lives in an in-memory SQLite database of its own, migrated and empty, which
    disappears with the environment. Nothing listens on a port, nothing is written to disk, and
    two environments never see each other's runs. Nothing in it waits on the wall clock: waits
    are the server's long-polls, answered the moment a run changes, and sleeps are ended with
    the public ``wake`` action (:meth:`skip_sleep`).

    Use it as an async context manager; leaving it stops the worker (in-flight executions are
    cancelled), closes the client, stops the server's background loops and frees the database.

    Args:
        workflows: The workflow versions the environment's worker serves. Empty: no worker is
            started (start your own with :meth:`start_worker`).
        concurrency: Runs the worker executes at once.
        pools: Worker pools the worker claims from (see ``aiki.worker``).
        sleep_hold_max: Sleeps up to this long are waited out by their executor in memory, as
            ``aiki.server(sleep_hold_max=...)``. The default, 0, makes every sleep suspend its
            run (status ``sleeping``) until it is due or a test ends it.
        lease_ttl: The server's lease TTL (``aiki.server(lease_ttl=...)``).
        wait_timeout: The longest any wait of the environment lasts before it raises
            ``WaitTimeoutError``, so that a test whose run never gets there fails instead of
            hanging. None: no limit.
        database_url: Keep the state in this database instead (e.g. a PostgreSQL database made
            for the test); its migrations are applied, and its data is left in place.

    Attributes:
        WAITING_STATUSES: The statuses :meth:`wait_until_waiting` waits for.

    Example:
        >>> import asyncio
        >>> from datetime import timedelta
        >>> from aiki import Run, task, workflow
        >>> from aiki.testing import WorkflowEnvironment
        >>> @task(name="env-doc-double")
        ... async def double(x: int) -> int:
        ...     return 2 * x
        >>> reminder = workflow(name="env-doc-reminder")
        >>> @reminder.v("1")
        ... async def reminder_v1(run: Run, x: int) -> int:
        ...     await run.sleep(timedelta(days=3))
        ...     return await double.start(run, x)
        >>> async def check() -> None:
        ...     async with WorkflowEnvironment(workflows=[reminder_v1]) as env:
        ...         run = await env.start(reminder_v1, 21)
        ...         await env.skip_sleep(run)  # the three days are over now
        ...         assert await run.result() == 42
        ...         assert [t.name for t in await env.tasks(run)] == ["env-doc-double"]
        >>> asyncio.run(check())
    """

    WAITING_STATUSES = WAITING_STATUSES

    def __init__(
        self,
        workflows: Sequence[WorkflowVersion[Any, Any]] = (),
        *,
        concurrency: int = 10,
        pools: Sequence[str] | None = None,
        sleep_hold_max: timedelta = timedelta(0),
        lease_ttl: timedelta = timedelta(seconds=30),
        wait_timeout: timedelta | None = timedelta(seconds=30),
        database_url: str | None = None,
    ) -> None:
        self._workflows = list(workflows)
        self._concurrency = concurrency
        self._pools = list(pools) if pools is not None else None
        self._server_options: dict[str, Any] = {"sleep_hold_max": sleep_hold_max, "lease_ttl": lease_ttl}
        self._wait_timeout = wait_timeout
        self._database_url = database_url
        self._server: AikiServer | None = None
        self._client: Client | None = None
        self._worker: WorkerHandle | None = None
        self._workers: list[WorkerHandle] = []
        self._resources: contextlib.AsyncExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowEnvironment:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> WorkflowEnvironment:
        """Start the server and the worker (``async with`` calls it).

        Returns:
            The environment itself.

        Raises:
            RuntimeError: It is open already.
        """
        if self._resources is not None:
            raise RuntimeError("the environment is open already")
        self._resources = contextlib.AsyncExitStack()
        try:
            await self._open(self._resources)
        except BaseException:
            await self.close()
            raise
        return self

    async def _open(self, resources: contextlib.AsyncExitStack) -> None:
        if self._database_url is not None:
            db = aiki.database(self._database_url)
        else:
            store = await _private_database()
            resources.callback(store.close)
            db = aiki.database(store.url, migrate=False)
        resources.push_async_callback(db.dispose)
        self._server = aiki.server(db=db, **self._server_options)
        await self._server.runtime.start()
        resources.push_async_callback(self._server.runtime.stop)
        self._client = aiki.client(handler=self._server.handler)
        resources.push_async_callback(self._client.close)
        # Workers stop first (last in), while the server they hand their runs back to still runs.
        resources.push_async_callback(self._stop_workers)
        if self._workflows:
            self._worker = await self.start_worker(self._workflows, concurrency=self._concurrency, pools=self._pools)

    async def close(self) -> None:
        """Stop everything the environment started and free its database (idempotent)."""
        resources, self._resources = self._resources, None
        if resources is not None:
            await resources.aclose()
        self._server = self._client = self._worker = None

    async def _stop_workers(self) -> None:
        workers, self._workers = self._workers, []
        for handle in reversed(workers):
            await handle.stop(grace=timedelta(0))

    @property
    def client(self) -> Client:
        """The client of the environment's server (in-process)."""
        if self._client is None:
            raise RuntimeError("the environment is not open: use `async with WorkflowEnvironment(...)`")
        return self._client

    @property
    def server(self) -> AikiServer:
        """The embedded server (``aiki.server``)."""
        if self._server is None:
            raise RuntimeError("the environment is not open: use `async with WorkflowEnvironment(...)`")
        return self._server

    @property
    def worker(self) -> WorkerHandle:
        """The worker serving the environment's ``workflows``.

        Raises:
            RuntimeError: The environment is not open, or was made without workflows.
        """
        if self._worker is None:
            raise RuntimeError("no worker: the environment is not open, or was given no workflows")
        return self._worker

    async def start_worker(
        self,
        workflows: Sequence[WorkflowVersion[Any, Any]],
        *,
        concurrency: int = 10,
        pools: Sequence[str] | None = None,
    ) -> WorkerHandle:
        """Start another worker on the environment's server; it is stopped with the environment.

        Args:
            workflows: The workflow versions it serves.
            concurrency: Runs it executes at once.
            pools: Worker pools it claims from.

        Returns:
            The running worker (``await handle.stop()`` stops it earlier).
        """
        handle = await aiki.worker(workflows=workflows, concurrency=concurrency, pools=pools).spawn(self.client)
        self._workers.append(handle)
        return handle

    # -- runs ---------------------------------------------------------------------------------

    async def start(self, version: WorkflowVersion[I, O], input: I | None = None) -> RunHandle[O]:
        """Start a run of ``version`` (``version.start(env.client, input)``).

        Returns:
            Its handle: ``run.events.<name>.send()``, ``run.result()``, ``run.cancel()`` ...
        """
        return await version.start(self.client, input)

    def _handle(self, run: RunRef) -> RunHandle[Any]:
        if isinstance(run, str):
            return RunHandle(self.client, run, Any, {})
        return run

    def _timeout(self, timeout: timedelta | float | None) -> timedelta | float | None:
        return self._wait_timeout if timeout is None else timeout

    async def wait_for_status(
        self, run: RunRef, status: str | Sequence[str], *, timeout: timedelta | float | None = None
    ) -> RunView:
        """Wait until the run reaches ``status`` (or one of several), as ``RunHandle.wait_for_status``.

        Args:
            run: The run.
            status: The status, or statuses, to wait for.
            timeout: The longest wait (default: the environment's ``wait_timeout``).

        Returns:
            The run as it was when it got there.

        Raises:
            RunFailedError: The run failed instead.
            RunCancelledError: The run was cancelled instead.
            UnexpectedStatusError: The run completed instead.
            WaitTimeoutError: ``timeout`` elapsed first.
        """
        return await self._handle(run).wait_for_status(status, timeout=self._timeout(timeout))

    async def wait_until_waiting(self, run: RunRef, *, timeout: timedelta | float | None = None) -> RunView:
        """Wait until the run waits for something: a sleep, an event, a child or a task retry.

        The returned view's ``status`` says which (one of :data:`WAITING_STATUSES`). An event sent
        before then is not lost either way (it is kept until the run waits for it); this is for
        tests that look at the run while it waits.

        Raises:
            RunFailedError: The run failed instead.
            RunCancelledError: The run was cancelled instead.
            UnexpectedStatusError: The run completed instead.
            WaitTimeoutError: The timeout elapsed first.
        """
        return await self.wait_for_status(run, sorted(WAITING_STATUSES), timeout=timeout)

    async def skip_sleep(self, run: RunRef, *, timeout: timedelta | float | None = None) -> RunView:
        """Wait until the run sleeps, then end that sleep now.

        The sleep is ended with the public ``wake`` action (``RunHandle.wake``): ``run.sleep()``
        returns ``SleepResult(cancelled=True)`` in the workflow, as it would for a person waking
        the run in the dashboard. Should the sleep end by itself first, that is taken as skipped.

        Returns:
            The run just after the sleep ended.

        Raises:
            RunFailedError: The run failed before it slept.
            RunCancelledError: The run was cancelled before it slept.
            UnexpectedStatusError: The run completed without sleeping.
            WaitTimeoutError: It did not sleep within the timeout.
        """
        handle = self._handle(run)
        await self.wait_for_status(handle, "sleeping", timeout=timeout)
        try:
            return await handle.wake(reason="skipped by aiki.testing")
        except ActionNotAllowedError:
            return await handle.describe()

    async def skip_sleeps(self, run: RunRef, *, timeout: timedelta | float | None = None) -> RunView:
        """End every sleep of the run, one after the other, until it does anything but sleep.

        Waits until the run ends, or waits for an event, a child or a task retry, ending each
        sleep it reaches on the way (as :meth:`skip_sleep`). ``timeout`` bounds each wait, not
        the whole.

        Returns:
            The run where it stopped: ended (completed, failed or cancelled) or waiting for
            something other than a timer.

        Raises:
            WaitTimeoutError: The run neither slept, waited nor ended within the timeout.
        """
        handle = self._handle(run)
        stops = sorted((WAITING_STATUSES | TERMINAL_STATUSES) - {"sleeping"})
        while True:
            view = await self.wait_for_status(handle, ["sleeping", *stops], timeout=timeout)
            if view.status != "sleeping":
                return view
            with contextlib.suppress(ActionNotAllowedError):  # it woke by itself meanwhile
                await handle.wake(reason="skipped by aiki.testing")

    # -- what a run did -----------------------------------------------------------------------

    async def detail(self, run: RunRef) -> RunDetail:
        """The run and everything recorded inside it: tasks, events, sleeps, children."""
        return await self.client.run_detail(self._handle(run).id)

    async def history(self, run: RunRef) -> list[HistoryEntry]:
        """The run's status transitions, oldest first."""
        return await self.client.history(self._handle(run).id)

    async def statuses(self, run: RunRef) -> list[str]:
        """The statuses the run went through, oldest first (e.g. ``["queued", "running", "completed"]``)."""
        return [entry.to_status for entry in await self.history(run)]

    async def tasks(self, run: RunRef, *, include_discarded: bool = False) -> list[TaskCall]:
        """The tasks the run called, in the order it first called them.

        Args:
            run: The run.
            include_discarded: Also list the calls a workflow retry or a cancel dropped.
        """
        calls = [TaskCall.from_detail(t) for t in (await self.detail(run)).tasks]
        return [c for c in calls if include_discarded or c.status != "discarded"]

    async def events(self, run: RunRef) -> list[SentEvent]:
        """The events sent to the run, by name, then in the order they were sent."""
        return [SentEvent.from_detail(e) for e in (await self.detail(run)).events]

    async def children(self, run: RunRef) -> list[ChildRun]:
        """The runs this run started as children, oldest first (the first 500).

        ``version.get_handle(env.client, child.id)`` gives a handle on one, to drive it.
        """
        return (await self.detail(run)).children


# Alembic keeps its migration context in a module global: two migrations of one process must not
# interleave, so environments opened at once in one event loop make the template one at a time.
_template_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _private_database() -> _database.SqliteStore:
    """A fresh database for one environment: a copy of the process's migrated template."""
    in_memory = _database.memdb_supported()
    template = _database.template()
    if template is None:
        lock = _template_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            template = _database.template() or await _migrated(_database.SqliteStore(in_memory=in_memory))
    store = _database.SqliteStore(in_memory=in_memory)
    try:
        store.copy_from(template)
    except BaseException:
        store.close()
        raise
    return store


async def _migrated(candidate: _database.SqliteStore) -> _database.SqliteStore:
    """Migrate ``candidate`` (the server's own migrate-on-start) and keep it as the template."""
    try:
        db = aiki.database(candidate.url)
        try:
            runtime = aiki.server(db=db).runtime
            await runtime.start()
            await runtime.stop()
        finally:
            await db.dispose()
    except BaseException:
        candidate.close()
        raise
    if _database.keep_template(candidate):
        atexit.register(candidate.close)
        return candidate
    # Another environment made one meanwhile.
    candidate.close()
    kept = _database.template()
    assert kept is not None
    return kept
