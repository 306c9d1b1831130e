"""One execution's end of the write pipeline: one write at a time, deferral, retries and fencing.

Every write names the revision the execution holds, set when it is sent. A write is retried while
the server is unavailable (within the execution's retry budget); fenced off (a stale revision) or
refused, the execution is abandoned without further writes (lease recovery hands the run out
again). Every answer renews what the writer knows of the run's lease (:attr:`RunWriter.lease_until`).

*Deferral.* A completed task's record is durable before anything that follows the task can have an
effect: new work (a task, a child) sends it first and waits for it (:meth:`RunWriter.flush`). What
the workflow does right after a task is usually its next write, though: a completion, a sleep, a
wait. So the record (if at most a quarter of the server's request limit) waits for the rest of the
current loop iteration; if a transition comes, the record goes ahead of it in the same group (one
round trip instead of two; the server refuses the transition if it refuses the record), otherwise
it goes out alone at once.

*Held sleeps.* A short sleep the server lets the executor hold is answered ``held``; the writer then
sends the :class:`ResumeSleep` at once (a parking command: alone, answered at the sleep's end). From
the sleep's command to the resume's answer the run is not ``running`` on the server: ``holding``
is set, so heartbeats leave it out, and ``holds`` changes at both ends, so an answer to a beat sent
before cannot stop the execution.

*Closing.* An execution handed back at a time limit (a push endpoint's) sets ``closing``: from then on
only task records are written (none deferred), any other write ends the execution unsent, and
:meth:`RunWriter.close` makes a deferred record durable before the writer finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from aiki.worker_sdk._pipeline import WritePipeline
from aiki.worker_sdk.errors import (
    AikiError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerUnavailableError,
    StaleRevisionError,
    UnexpectedResponseError,
)
from aiki.worker_sdk.protocol import (
    Command,
    CommandResult,
    HeartbeatRequest,
    HeartbeatResponse,
    HeartbeatRun,
    RecordTask,
    RecordTaskResponse,
    ResumeSleep,
    Sleep,
    StartChild,
    StartChildResponse,
    TransitionResponse,
)
from aiki.worker_sdk.transport import error_from_problem

log = logging.getLogger("aiki.worker")
R = TypeVar("R")
Passthrough = tuple[type[AikiError], ...]
Heartbeat = Callable[[HeartbeatRequest], Awaitable[HeartbeatResponse]]

# A completed task's record may travel with the execution's next write when it is at most this
# fraction of the server's request limit (so the two together stay well within it).
_DEFER_FRACTION = 4
_MERGE_MARGIN_BYTES = 1024


class Suspend(BaseException):
    """Unwinds the workflow coroutine once the run is suspended (or the execution is over).

    A BaseException so that ``except Exception`` in workflow code cannot swallow it.
    """


class Abandon(BaseException):
    """Unwinds the execution without further writes; lease recovery hands the run out again."""


def raise_problems(results: Sequence[CommandResult]) -> None:
    """Raise the SDK exception of the first refused command, as its own route's answer would."""
    for result in results:
        if result.problem is not None:
            status = result.problem.status
            raise error_from_problem(status, result.problem, retry_after="1" if status == 503 else None)


def _answer(response: R | None, kind: str) -> R:
    if response is None:
        raise UnexpectedResponseError(f"the server answered a {kind} command with neither a response nor a problem")
    return response


class RunWriter:
    """Writes the commands of one execution (see the module docstring).

    Attributes:
        run_id: The run written to.
        revision: The run revision the execution holds (its fencing token).
        finished: True once no more writes may be made.
        lease_until: ``time.monotonic()`` until which the lease is surely ours: a lease TTL after the
            last request the server answered for this run (a claim, a write, a heartbeat) was sent.
        holding: A held sleep is under way (see the module docstring); ``holds``: how many began.
        closing: Only task records may be written (see the module docstring).
        abandoned_by: Why the writer gave up, if it did: the error a write was refused with
            (``StaleRevisionError``: fenced off), or the last ``ServerUnavailableError``.
        unavailable: The server was unavailable to the last write sent (None: it answered).
    """

    def __init__(
        self,
        pipeline: WritePipeline,
        run_id: str,
        revision: int,
        *,
        retry_budget: float,
        payload_max_bytes: int | None,
        lease_ttl_ms: int,
        claimed_at: float | None,
        heartbeat: tuple[str, Heartbeat] | None,
        sleep_hold: tuple[int, Callable[[], bool]] | None = None,
        paused: Callable[[], None],
    ) -> None:
        self._pipeline = pipeline
        self.run_id = run_id
        self.revision = revision
        self.finished = False
        self.closing = False
        self.abandoned_by: AikiError | None = None
        self.unavailable: ServerUnavailableError | None = None
        self.retry_budget = retry_budget
        self._payload_max_bytes = payload_max_bytes
        self._lease_ttl = lease_ttl_ms / 1000
        self.lease_until = (time.monotonic() if claimed_at is None else claimed_at) + self._lease_ttl
        self._heartbeat = heartbeat
        self._paused = paused
        self._sleep_hold = sleep_hold
        self.holding = False
        self.holds = 0
        self._lock = asyncio.Lock()
        # A completed task's record not sent yet; at most one at a time.
        self._deferred: RecordTask | None = None
        self._deferred_size = 0
        self._flushes: set[asyncio.Task[None]] = set()

    # -- retries and fencing ------------------------------------------------------------------

    async def call(self, call: Callable[[], Awaitable[R]], passthrough: Passthrough = ()) -> R:
        """Make one call: retry while the server is unavailable; abandon if fenced or refused."""
        deadline = time.monotonic() + self.retry_budget
        delay = 0.2
        while True:
            if self.finished:
                raise Suspend
            try:
                sent = time.monotonic()
                answer = await call()
                self.unavailable = None
                self.renew_lease(sent)
                return answer
            except passthrough:
                raise
            except ServerUnavailableError as e:
                self.unavailable = e
                wait = e.retry_after if isinstance(e, RateLimitedError) and e.retry_after else delay
                if time.monotonic() + wait > deadline:
                    log.warning("run %s: server unavailable, abandoning to lease recovery: %s", self.run_id, e)
                    self._abandon(e)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 5.0)
            except StaleRevisionError as e:
                log.info("run %s: revision %d is stale, abandoning the execution", self.run_id, self.revision)
                self.abandoned_by = e
                self._abandon(None)
            except AikiError as e:
                log.error("run %s: write refused, abandoning the execution: %r", self.run_id, e)
                self._abandon(e)

    def _abandon(self, cause: AikiError | None) -> None:
        self.finished = True
        self.abandoned_by = cause or self.abandoned_by
        raise Abandon from cause

    def renew_lease(self, sent: float) -> None:
        """The server answered a request for this run sent at ``sent`` (monotonic): the lease held then."""
        self.lease_until = max(self.lease_until, sent + self._lease_ttl)

    async def confirm_lease(self) -> None:
        """Before a task runs: if nothing renewed the lease for a whole TTL, ask the server whether it is still ours.

        A worker process stopped (SIGSTOP, a VM paused) past its lease reads, once resumed, answers
        its server gave long ago (a claim, a sleep's end): the run may since have been recovered and
        run elsewhere. Its writes are fenced, but a task's side effect is not: so it asks first.
        """
        if self._heartbeat is None or time.monotonic() < self.lease_until:
            return
        worker_id, heartbeat = self._heartbeat
        beat = HeartbeatRequest(worker_id=worker_id, runs=[HeartbeatRun(self.run_id, self.revision)])
        response = await self.call(lambda: heartbeat(beat))
        if self.run_id in response.stale:
            log.info("run %s: lease lost while this worker was away, abandoning the execution", self.run_id)
            self._abandon(None)

    async def _send(self, commands: list[Command], passthrough: Passthrough = ()) -> list[CommandResult]:
        """Send one group (the caller holds the lock), each command fenced by the current revision."""

        async def once() -> list[CommandResult]:
            if self.closing and not all(isinstance(c, RecordTask) for c in commands):
                raise Suspend  # unsent; sibling coroutines may still record finished attempts
            for command in commands:
                command.revision = self.revision
            results = await self._pipeline.send(commands)
            raise_problems(results)
            return results

        return await self.call(once, passthrough)

    # -- the writes ---------------------------------------------------------------------------

    async def record(self, command: RecordTask, passthrough: Passthrough = ()) -> RecordTaskResponse:
        """Record a task attempt now (an earlier deferred record first)."""
        async with self._lock:
            await self._send_deferred()
            [result] = await self._send([command], passthrough)
        response = _answer(result.record, type(command).__name__)
        if response.paused:
            self._paused()
        return response

    async def record_completed(self, command: RecordTask, size: int) -> None:
        """A completed task's record (``size`` payload bytes): deferred if it may be, else sent now.

        Raises:
            PayloadTooLargeError: The server refused it as too large (the task then failed).
        """
        if self.may_defer(size):
            self.defer(command, size)
        else:
            await self.record(command, passthrough=(PayloadTooLargeError,))

    async def start_child(self, command: StartChild, passthrough: Passthrough = ()) -> StartChildResponse:
        """Start a child (new work: an earlier deferred record is durable first)."""
        async with self._lock:
            await self._send_deferred()
            [result] = await self._send([command], passthrough)
        return _answer(result.child, type(command).__name__)

    async def transition(self, command: Command, passthrough: Passthrough = ()) -> TransitionResponse:
        """End or suspend the execution; a deferred record travels ahead of it if both fit one request.

        A :class:`Sleep` with ``hold`` is held in memory (see the module docstring).
        """
        if isinstance(command, Sleep) and command.hold:
            return await self._hold_sleep(command)
        return await self._transition(command, passthrough)

    async def _transition(self, command: Command, passthrough: Passthrough = ()) -> TransitionResponse:
        async with self._lock:
            group: list[Command] = [command]
            if self._joins(command):
                assert self._deferred is not None
                group.insert(0, self._deferred)
                self._deferred = None
            else:
                await self._send_deferred()
            results = await self._send(group, passthrough)
        response = _answer(results[-1].transition, type(command).__name__)
        if response.revision is not None:
            self.revision = response.revision
        return response

    def may_hold(self, duration_ms: int) -> bool:
        """Whether a sleep of ``duration_ms`` may be held now: the server allows it, the worker has a free slot."""
        if self._sleep_hold is None:
            return False
        limit, free_slot = self._sleep_hold
        return duration_ms <= limit and free_slot()

    async def _hold_sleep(self, command: Sleep) -> TransitionResponse:
        """A short sleep held in memory: the answer that ends or suspends it."""
        self.holding, self.holds = True, self.holds + 1
        try:
            response = await self._transition(command)
            if response.suspended or not response.held:
                return response
            # The server answers this at the sleep's end (at once if the run is cancelled or woken).
            resume = ResumeSleep(run_id=self.run_id, revision=self.revision, name=command.name, seq=command.seq)
            return await self._transition(resume)
        finally:
            self.holding, self.holds = False, self.holds + 1

    # -- deferral -----------------------------------------------------------------------------

    def may_defer(self, size: int) -> bool:
        """Whether a completed task's record of ``size`` payload bytes may wait for the next write."""
        limit = self._payload_max_bytes
        if limit is None or self._deferred is not None or self.closing:
            return False
        return size <= limit // _DEFER_FRACTION

    def defer(self, command: RecordTask, size: int) -> None:
        """Hold ``command`` for the rest of this loop iteration (see the module docstring)."""
        self._deferred, self._deferred_size = command, size
        asyncio.get_running_loop().call_soon(self._flush_soon)

    async def close(self) -> None:
        """Closing: once the write under way (if any) is answered, send a deferred record; then finish."""
        async with self._lock:
            await self._send_deferred()
        self.finished = True

    async def flush(self) -> None:
        """Make a deferred record durable before new work (a flush on its way holds the lock until it is)."""
        if self._deferred is not None or self._flushes:
            async with self._lock:
                await self._send_deferred()

    def _joins(self, command: Command) -> bool:
        """Whether the deferred record may go ahead of ``command`` in one group."""
        limit = self._payload_max_bytes
        if self._deferred is None or limit is None or command.parks or isinstance(command, RecordTask | StartChild):
            return False
        if self.closing:
            return False
        return len(msgspec.json.encode(command)) + self._deferred_size + _MERGE_MARGIN_BYTES <= limit

    def _flush_soon(self) -> None:
        if self._deferred is None or self.finished:
            return
        flush = asyncio.get_running_loop().create_task(self._flush_deferred())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _flush_deferred(self) -> None:
        try:
            async with self._lock:
                await self._send_deferred()
        except (Suspend, Abandon):
            pass  # fenced or given up: ``finished`` is set and the workflow stops at its next step

    async def _send_deferred(self) -> None:
        """Send the deferred record alone, if any (the caller holds the lock)."""
        command, self._deferred = self._deferred, None
        if command is not None:
            [result] = await self._send([command])
            if _answer(result.record, type(command).__name__).paused:
                self._paused()
