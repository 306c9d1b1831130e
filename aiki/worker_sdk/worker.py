"""The worker: registers versions, claims activations, executes them, heartbeats.

While it executes runs it keeps a watch open (``POST /workers/watch``, a long-poll): the server
answers it as soon as one of those runs is cancelled (or otherwise fenced) or a pause of it is
requested, so the execution stops at once (its running tasks get ``asyncio.CancelledError``) or at
its next step boundary, rather than at the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from aiki.worker_sdk import serde
from aiki.worker_sdk._execution import Execution
from aiki.worker_sdk._worker_connection import WorkerConnection, connect
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.errors import AikiError, NotFoundError, RateLimitedError, ServerUnavailableError
from aiki.worker_sdk.protocol import (
    Activation,
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatRun,
    RegisterWorkerRequest,
    ReleaseRequest,
    VersionRef,
    VersionSpec,
    WatchRequest,
    WatchResponse,
)

log = logging.getLogger("aiki.worker")
CLAIM_WAIT_MS = 20_000
WATCH_WAIT_MS = 20_000
# A new watch (for runs begun since the last one) goes out this long after a run begins: most runs
# end sooner and never need one (a cancel meanwhile still fences their next write), and under load,
# where runs begin by the hundred a second, one watch covers them all.
WATCH_COALESCE_S = 0.05
# Superseded watches still on their way (answered by another server replica at its own time).
_WATCHES_MAX = 8
# Registration and claim retries back off up to this: a worker is idle at most about this long
# after its server (or the database) is back.
RETRY_BACKOFF_MAX_S = 2.0


def _jittered(backoff: float) -> float:
    """A wait of between half and all of ``backoff``: workers cut off together do not come back in step."""
    return backoff * random.uniform(0.5, 1.0)


class Worker:
    """A worker definition, built by :func:`worker`; :meth:`spawn` starts it.

    Attributes:
        versions: The workflow versions served, by ``(name, version)``.
        concurrency: How many runs it executes at once.
        pools: The worker pools it claims from (empty: the default pool).
        worker_id: The id it registers with.
        heartbeat_interval: The longest wait between heartbeats it asked for, if any.
    """

    def __init__(
        self,
        workflows: Sequence[WorkflowVersion[Any, Any]],
        concurrency: int,
        pools: Sequence[str] | None,
        worker_id: str | None,
        heartbeat_interval: timedelta | None = None,
    ) -> None:
        """Check and keep the definition; use :func:`worker` rather than this constructor.

        Raises:
            ValueError: ``concurrency`` below 1, a non-positive ``heartbeat_interval``, or a
                version listed twice.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if heartbeat_interval is not None and heartbeat_interval <= timedelta(0):
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval}")
        self.heartbeat_interval = heartbeat_interval
        self.versions = {(v.name, v.version): v for v in workflows}
        if len(self.versions) != len(workflows):
            raise ValueError("a workflow version is listed twice")
        self.concurrency = concurrency
        self.pools = list(pools or [])
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def specs(self) -> list[VersionSpec]:
        """The versions served, with the JSON Schemas of their inputs and events.

        Returns:
            One registration entry per version, as :meth:`spawn` sends them.
        """
        return [
            VersionSpec(
                workflow=v.name,
                version=v.version,
                input_schema=serde.json_schema(v.input_type) if v.takes_input else None,
                event_schemas={name: serde.json_schema(e.type) for name, e in v.events.items()},
                timeout_ms=None if v.timeout is None else int(v.timeout.total_seconds() * 1000),
            )
            for v in self.versions.values()
        ]

    async def spawn(self, client: Client) -> WorkerHandle:
        """Register with the server and start claiming in the background.

        While the server cannot be reached or answers 503 (it is starting, its database restarts),
        registration is retried with backoff, without limit: a worker may start before its server.

        Args:
            client: The Aiki client it talks to the server through.

        Returns:
            A :class:`WorkerHandle` on the running worker; ``await handle.stop()`` stops it.

        Raises:
            AikiError: Registration was refused (e.g. ``AuthenticationError`` for a bad key).
        """
        request = RegisterWorkerRequest(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            versions=self.specs(),
            pools=self.pools,
            concurrency=self.concurrency,
            pid=os.getpid(),
        )
        connection = connect(client)
        delay = 0.2
        while True:
            try:
                response = await connection.register_worker(request)
                break
            except ServerUnavailableError as e:
                wait = e.retry_after if isinstance(e, RateLimitedError) and e.retry_after else _jittered(delay)
                log.warning("worker %s: cannot register yet, retrying in %.1fs: %s", self.worker_id, wait, e)
                await asyncio.sleep(wait)
                delay = min(delay * 2, RETRY_BACKOFF_MAX_S)
        # The server's interval keeps its leases alive; a worker may ask to beat more often.
        interval = response.heartbeat_interval_ms / 1000
        if self.heartbeat_interval is not None:
            interval = min(interval, self.heartbeat_interval.total_seconds())
        handle = WorkerHandle(self, connection, response.worker_id, interval)
        handle._start()
        return handle


class WorkerHandle:
    """A running worker, returned by :meth:`Worker.spawn`; :meth:`stop` stops it.

    Attributes:
        worker_id: The id the server knows this worker by.
    """

    def __init__(self, worker: Worker, connection: WorkerConnection, worker_id: str, heartbeat_interval: float) -> None:
        self._worker = worker
        self._connection = connection
        self.worker_id = worker_id
        self._heartbeat_interval = max(heartbeat_interval, 0.05)
        self._executions: dict[str, tuple[Execution, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._claim_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # Set when an execution begins: the open watch does not cover it yet.
        self._watch_wanted = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Activations being executed now."""
        return len(self._executions)

    def _start(self) -> None:
        self._claim_task = asyncio.create_task(self._claim_loop(), name=f"aiki-claim-{self.worker_id}")
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name=f"aiki-hb-{self.worker_id}")
        self._watch_task = asyncio.create_task(self._watch_loop(), name=f"aiki-watch-{self.worker_id}")

    async def _claim_loop(self) -> None:
        refs = [VersionRef(name, version) for name, version in self._worker.versions]
        backoff = 0.2
        while not self._stopping:
            free = self._worker.concurrency - len(self._executions)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            request = ClaimRequest(
                worker_id=self.worker_id,
                versions=refs,
                max_runs=free,
                wait_ms=CLAIM_WAIT_MS,
                pools=self._worker.pools,
            )
            try:
                sent = time.monotonic()
                response = await self._connection.claim(request)
            except ServerUnavailableError as e:
                wait = _jittered(backoff)
                log.warning("worker %s: claim failed, retrying in %.2fs: %s", self.worker_id, wait, e)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            except AikiError as e:
                log.error("worker %s: claim refused, retrying in 5s: %r", self.worker_id, e)
                await asyncio.sleep(5.0)
                continue
            backoff = 0.2
            for activation in response.activations:
                self._launch(activation, sent)

    def _has_a_free_slot(self) -> bool:
        return self._worker.concurrency - len(self._executions) >= 1

    def _launch(self, activation: Activation, claimed_at: float) -> None:
        version = self._worker.versions.get((activation.workflow, activation.version))
        if version is None:
            # The server only hands out versions we registered; leave the lease to expire.
            log.error(
                "worker %s: got a run of unknown version %s@%s",
                self.worker_id,
                activation.workflow,
                activation.version,
            )
            return
        # A short sleep may keep its slot only while the worker has another one free for new work.
        execution = Execution(
            self._connection,
            version,
            activation,
            may_hold=self._has_a_free_slot,
            worker_id=self.worker_id,
            # The lease may have been granted any time after the claim was sent (a long-poll).
            claimed_at=claimed_at,
        )
        task = asyncio.create_task(self._execute(execution), name=f"aiki-run-{activation.run_id}")
        self._executions[activation.run_id] = (execution, task)
        self._watch_wanted.set()

    async def _execute(self, execution: Execution) -> None:
        try:
            await execution.execute()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("run %s: execution crashed; lease recovery will retry it", execution.run_id)
        finally:
            entry = self._executions.get(execution.run_id)
            if entry is not None and entry[0] is execution:
                del self._executions[execution.run_id]
            self._slot_freed.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            # A run whose sleep its execution holds is not `running` on the server: its lease is the
            # sleep's own deadline, so it is left out (it would be reported stale).
            live = [
                (run_id, e) for run_id, (e, _) in self._executions.items() if not e.finished and not e.writer.holding
            ]
            runs = [HeartbeatRun(run_id, e.revision) for run_id, e in live]
            sent = {r.run_id: r.revision for r in runs}
            holds = {run_id: e.writer.holds for run_id, e in live}
            sent_at = time.monotonic()
            try:
                response = await self._connection.heartbeat(HeartbeatRequest(worker_id=self.worker_id, runs=runs))
            except AikiError as e:
                log.warning("worker %s: heartbeat failed: %r", self.worker_id, e)
                continue
            for run_id, execution in live:
                if run_id not in response.stale:
                    execution.writer.renew_lease(sent_at)
            for run_id in response.stale:
                entry = self._executions.get(run_id)
                # While the beat was in flight the run may have been claimed again by this worker: the
                # newer execution holds the current revision and must go on.
                # So is one that began holding a sleep while the beat was in flight.
                if (
                    entry is not None
                    and entry[0].revision == sent.get(run_id)
                    and entry[0].writer.holds == holds.get(run_id)
                ):
                    self._stop_execution(run_id, entry)
            self._pause_executions(response.paused, sent)

    def _stop_execution(self, run_id: str, entry: tuple[Execution, asyncio.Task[None]]) -> None:
        """Stop an execution whose run moved on: it writes nothing more, its tasks get CancelledError."""
        if entry[0].finished and entry[1].done():
            return
        log.info("run %s: revision moved on; stopping its execution", run_id)
        entry[0].finished = True
        entry[1].cancel()

    def _pause_executions(self, run_ids: Sequence[str], sent: dict[str, int]) -> None:
        """A pause of these runs is requested: their executions stop at their next step boundary."""
        for run_id in run_ids:
            entry = self._executions.get(run_id)
            if entry is not None and entry[0].revision == sent.get(run_id) and not entry[0].pause_requested:
                log.info("run %s: pause requested; stopping at the next step boundary", run_id)
                entry[0].pause_requested = True

    async def _watch_loop(self) -> None:
        """Keep a watch open on the runs being executed (see the module docstring)."""
        outstanding: list[asyncio.Task[None]] = []
        try:
            await self._watch_forever(outstanding)
        finally:
            for call in outstanding:
                call.cancel()

    async def _watch_forever(self, outstanding: list[asyncio.Task[None]]) -> None:
        backoff = 0.2
        while True:
            self._watch_wanted.clear()
            sent = {run_id: e.revision for run_id, (e, _) in self._executions.items() if not e.finished}
            if not sent:
                await self._watch_wanted.wait()
                await asyncio.sleep(WATCH_COALESCE_S)
                continue
            request = WatchRequest(
                worker_id=self.worker_id,
                runs=[HeartbeatRun(run_id, revision) for run_id, revision in sent.items()],
                wait_ms=WATCH_WAIT_MS,
                pausing=[run_id for run_id, (e, _) in self._executions.items() if e.pause_requested and run_id in sent],
            )
            call = asyncio.create_task(self._watch_once(request, sent))
            call.add_done_callback(_ignore_outcome)
            outstanding[:] = [c for c in outstanding if not c.done()]
            outstanding.append(call)
            while len(outstanding) > _WATCHES_MAX:
                outstanding.pop(0).cancel()
            wanted = asyncio.create_task(self._watch_wanted.wait())
            try:
                await asyncio.wait((call, wanted), return_when=asyncio.FIRST_COMPLETED)
            finally:
                wanted.cancel()
            if not call.done():
                # Runs began since: a new watch covers them too and ends this one on its server (whose
                # answer, should it come, is applied all the same).
                await asyncio.sleep(WATCH_COALESCE_S)
                continue
            error = call.exception()
            if isinstance(error, NotFoundError):
                log.warning("worker %s: the server has no watch route; cancels reach runs by heartbeat", self.worker_id)
                return
            if error is not None:
                log.warning("worker %s: watch failed, retrying in %.1fs: %r", self.worker_id, backoff, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.2

    async def _watch_once(self, request: WatchRequest, sent: dict[str, int]) -> None:
        response: WatchResponse = await self._connection.watch(request)
        for run_id in response.stale:
            entry = self._executions.get(run_id)
            # Only the execution the watch named (a newer one of the same run holds the new revision).
            if entry is not None and entry[0].revision == sent[run_id]:
                self._stop_execution(run_id, entry)
        self._pause_executions(response.paused, sent)

    async def stop(self, grace: timedelta | None = timedelta(seconds=10)) -> None:
        """Stop claiming, let in-flight executions finish, then stop.

        Executions still running after ``grace`` are cancelled without writing anything, and their
        runs are handed back to the server, which queues them again at once for another worker (no
        lease expiry to wait out, no recovery counted). Should the server be unreachable then, lease
        expiry recovers them as after a crash.

        Args:
            grace: How long to wait for in-flight executions (None: without limit; 0: cancel them
                at once).
        """
        self._stopping = True
        for background in (self._claim_task,):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        pending = [task for _, task in self._executions.values()]
        if pending:
            timeout = None if grace is None else grace.total_seconds()
            _, still = await asyncio.wait(pending, timeout=timeout) if timeout != 0 else (set(), set(pending))
            # What each cancelled execution held, read before it is cancelled (it then leaves the map).
            held = [HeartbeatRun(run_id, e.revision) for run_id, (e, t) in self._executions.items() if t in still]
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
            await self._release(held)
        for background in (self._heartbeat_task, self._watch_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background

    async def _release(self, held: list[HeartbeatRun]) -> None:
        """Hand the runs of cancelled executions back (once; on failure, lease expiry recovers them)."""
        if not held:
            return
        try:
            response = await self._connection.release(ReleaseRequest(worker_id=self.worker_id, runs=held))
        except AikiError as e:
            log.warning("worker %s: could not hand back %d run(s), lease expiry will: %r", self.worker_id, len(held), e)
            return
        log.info("worker %s: handed back %d run(s)", self.worker_id, len(response.released))


def worker(
    workflows: Sequence[WorkflowVersion[Any, Any]],
    *,
    concurrency: int = 10,
    pools: Sequence[str] | None = None,
    worker_id: str | None = None,
    heartbeat_interval: timedelta | None = None,
) -> Worker:
    """Define a worker.

    Args:
        workflows: The workflow versions it serves.
        concurrency: How many runs it executes at once.
        pools: Worker pools it claims from (runs started with ``pool=``). None or empty: the
            default pool only, i.e. runs started without a pool. A worker naming pools serves
            only those; list ``"default"`` among them to serve the default pool as well.
        worker_id: A stable id (default: host, pid and a random suffix).
        heartbeat_interval: Heartbeat more often than the server asks (never less often: the
            server's lease TTL and heartbeat interval rule, see ``server(lease_ttl=...)``).

    Returns:
        The worker; ``await worker(...).spawn(client)`` starts it.

    Raises:
        ValueError: ``concurrency`` below 1, a non-positive ``heartbeat_interval``, or a version
            listed twice.

    Example:
        >>> from aiki import Run, workflow, worker
        >>> @workflow("hello").v("1.0.0")
        ... async def hello_v1(run: Run, name: str) -> str:
        ...     return f"hello {name}"
        >>> definition = worker([hello_v1], concurrency=4, pools=["default", "gpu"], worker_id="w-1")
        >>> definition.worker_id, definition.concurrency, definition.pools
        ('w-1', 4, ['default', 'gpu'])
        >>> [(spec.workflow, spec.version, spec.input_schema) for spec in definition.specs()]
        [('hello', '1.0.0', {'type': 'string'})]

        Running it needs a server::

            async with aiki.client(url="https://aiki.example.com", api_key=key) as client:
                handle = await definition.spawn(client)
                ...
                await handle.stop()
    """
    return Worker(workflows, concurrency, pools, worker_id, heartbeat_interval)


def _ignore_outcome(call: asyncio.Task[None]) -> None:
    # A superseded watch's failure is of no interest (the current one's is read where it ends).
    if not call.cancelled():
        call.exception()
