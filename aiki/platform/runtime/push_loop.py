"""The push loop: delivers the ready runs of push endpoints' versions, one deliverer per endpoint.

The run's ready queue is the outbox. A :class:`Deliverer` claims runs for its endpoint exactly as a
worker does (``services/executions.claim``: SKIP LOCKED, in-process handoff of new runs, wake-ups;
leased to ``endpoint:<id>``), so any number of server replicas deliver each activation once, as
fast as a pull worker picks it up. Each claimed run is POSTed, signed, while the deliverer keeps
its lease (the endpoint never heartbeats); a failure is retried with a jittered exponential
backoff under a new revision, up to ``endpoint_max_attempts``, then the run goes back to the
queue. The endpoint's circuit breaker (in its row, shared by replicas) stops claims while open and
lets one probe through once its cooldown is over (``aiki.platform.domain.push``). The concurrency
limit holds across replicas (``services/deliveries.admit``).

:class:`PushLoop` keeps one deliverer per enabled endpoint of every namespace: it reloads them when
the registry notifies ``endpoints`` and every :data:`RELOAD_S` as a backstop (other replicas'
changes). A deliverer whose endpoint is disabled or deleted stops, giving back what it holds; at
shutdown every deliverer stops claiming, lets POSTs in flight finish within :data:`STOP_GRACE_S`,
and gives back the rest: no run is left leased to nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from aiki.platform.db.executor_store import executor_store
from aiki.platform.domain import push
from aiki.platform.domain import values as v
from aiki.platform.domain.ids import now_ms
from aiki.platform.services import deliveries as d
from aiki.platform.services.context import Services
from aiki.platform.services.executions import claim
from aiki.worker_sdk import protocol as p

log = logging.getLogger("aiki.runtime.push")

WAKE_KEY = "endpoints"
"""Notified by the endpoint registry when an endpoint is created, changed or deleted."""
RELOAD_S = 2.0
CLAIM_WAIT_MS = 5_000
TOUCH_S = 1.0
"""A success rewrites the endpoint's row (last delivery, breaker) at most this often per deliverer
while its breaker is closed without failures (a failure always does)."""
STOP_GRACE_S = 1.5
"""How long POSTs in flight may still finish when a deliverer stops (the runtime waits 5 s)."""


class PushLoop:
    """One :class:`Deliverer` per enabled endpoint, kept in step with the ``endpoints`` table."""

    def __init__(self, svc: Services, stopping: asyncio.Event) -> None:
        self._svc = svc
        self._stopping = stopping
        self.deliverers: dict[str, Deliverer] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._unusable: dict[str, str] = {}

    async def run(self) -> None:
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                since = self._svc.hub.version(WAKE_KEY)
                try:
                    targets, unusable = await d.load_targets(self._svc)
                    self._sync(targets)
                    self._report(unusable)
                    backoff = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("push loop: loading endpoints failed; retrying in %.2fs", backoff)
                    await _wait(self._stopping, backoff)
                    backoff = min(backoff * 2, RELOAD_S)
                    continue
                await self._svc.hub.wait(WAKE_KEY, since, RELOAD_S)
        finally:
            await self._stop_all()

    def _sync(self, targets: list[push.Target]) -> None:
        wanted = {t.id: t for t in targets}
        for endpoint_id, deliverer in list(self.deliverers.items()):
            if endpoint_id not in wanted:
                del self.deliverers[endpoint_id]
                log.info("endpoint %s disabled or deleted: its deliverer stops", endpoint_id)
                task = asyncio.create_task(deliverer.stop(), name=f"aiki-push-stop-{endpoint_id}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        for endpoint_id, target in wanted.items():
            running = self.deliverers.get(endpoint_id)
            if running is None:
                self.deliverers[endpoint_id] = Deliverer(self._svc, target).start()
            elif running.target != target:
                running.update(target)

    def _report(self, unusable: dict[str, str]) -> None:
        """Log each endpoint that cannot be delivered to once (not on every reload)."""
        for endpoint_id, reason in unusable.items():
            if self._unusable.get(endpoint_id) != reason:
                log.warning("endpoint %s is enabled but not delivered to: %s", endpoint_id, reason)
        self._unusable = unusable

    async def _stop_all(self) -> None:
        stopping = [deliverer.stop() for deliverer in self.deliverers.values()]
        self.deliverers.clear()
        await asyncio.gather(*stopping, *self._retiring, return_exceptions=True)


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; whether it is set."""
    if timeout_s > 0 and not event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


class Deliverer:
    """Claims and delivers the runs of one endpoint (see the module docstring)."""

    def __init__(self, svc: Services, target: push.Target, *, rng: random.Random | None = None) -> None:
        self._svc = svc
        self.target = target
        self._random = rng or random.Random()
        self._session = d.open_session()
        self.held: dict[str, int] = {}
        """Runs it holds (id → revision): their leases are kept."""
        self.breaker = push.Breaker()
        self.posts = 0
        """POSTs made (an attempt each)."""
        self._touch_after = 0.0
        self._deliveries: set[asyncio.Task[None]] = set()
        self._posts: set[asyncio.Task[d.PostResult]] = set()
        self._slot = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closed = asyncio.Event()
        self._gone: asyncio.Future[None] | None = None
        self._main: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> Deliverer:
        self._main = asyncio.create_task(self._run(), name=f"aiki-push-{self.target.id}")
        self._keeper = asyncio.create_task(self._keep_leases(), name=f"aiki-push-leases-{self.target.id}")
        return self

    def update(self, target: push.Target) -> None:
        """The endpoint changed (URL, versions, secret ...): claims from now on use the new one."""
        self.target = target
        self._end_claim()

    @property
    def in_flight(self) -> int:
        return len(self._deliveries)

    # -- claiming ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                await self._step()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("endpoint %s: deliverer step failed; retrying in %.2fs", self.target.id, backoff)
                await _wait(self._stopping, backoff)
                backoff = min(backoff * 2, 2.0)

    async def _step(self) -> None:
        target = self.target
        free = target.concurrency - len(self._deliveries)
        if free <= 0 or self._svc.hub.closed:
            await self._wait_slot(1.0)
            return
        state = await d.endpoint_state(self._svc, target)
        if state is None:  # disabled or deleted: the push loop stops this deliverer soon
            await _wait(self._stopping, RELOAD_S)
            return
        self.breaker = state.breaker
        now = now_ms()
        admission = push.admission(state.breaker, now)
        if admission == "wait":
            until = state.breaker.until or now
            await _wait(self._stopping, min(RELOAD_S, max(0.001, (until - now) / 1000)))
        elif admission == "probe":
            await self._probe()
        elif (limit := min(free, target.concurrency - state.in_flight)) <= 0:
            await self._wait_slot(0.05)  # other replicas' deliveries fill the endpoint
        else:
            self._spawn_all(await self._admit(await self._claim(limit)))

    async def _probe(self) -> None:
        """One delivery decides whether the breaker closes: claim a run, then take the probe (only
        one replica gets it), deliver it and wait for its outcome."""
        if self._deliveries:
            await self._wait_slot(1.0)  # deliveries from before it opened end first
            return
        claimed = await self._admit(await self._claim(1))
        if not claimed:
            return
        if not await d.take_probe(self._svc, self.target, now_ms()):
            await self._give_back(claimed, "another replica probes the endpoint", posted=False)
            await _wait(self._stopping, 0.05 + self._random.random() * 0.1)
            return
        tasks = self._spawn_all(claimed)
        if tasks:
            await asyncio.wait(tasks)

    async def _claim(self, limit: int) -> list[v.Activation]:
        if self._stopping.is_set():
            return []
        target = self.target
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gone = gone
        request = p.ClaimRequest(
            worker_id=target.worker_id,
            versions=[p.VersionRef(w, ver) for w, ver in target.versions],
            pools=list(target.pools),
            max_runs=limit,
            wait_ms=CLAIM_WAIT_MS,
        )
        try:
            claimed = await claim(self._svc, target.namespace_id, request, gone)
        finally:
            self._gone = None
        for a in claimed:  # from now on, stop() gives them back if nothing else does
            self.held[a.run_id] = a.revision
        return claimed

    async def _admit(self, claimed: list[v.Activation]) -> list[v.Activation]:
        """The runs claimed that fit the endpoint's concurrency (the rest were given back)."""
        kept = await d.admit(self._svc, self.target, claimed)
        for a in claimed[len(kept) :]:
            self.held.pop(a.run_id, None)
        return kept

    def _end_claim(self) -> None:
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    def _spawn_all(self, activations: list[v.Activation]) -> list[asyncio.Task[None]]:
        tasks = []
        for a in activations:
            if self._stopping.is_set():
                continue  # given back by stop()
            task = asyncio.create_task(self._deliver(a), name=f"aiki-push-{self.target.id}-{a.run_id}")
            self._deliveries.add(task)
            task.add_done_callback(self._delivered)
            tasks.append(task)
        return tasks

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slot.set()

    async def _wait_slot(self, timeout_s: float) -> None:
        self._slot.clear()
        slot = asyncio.ensure_future(self._slot.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({slot, stop}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            slot.cancel()
            stop.cancel()

    # -- delivering -------------------------------------------------------------------------------

    async def _deliver(self, a: v.Activation) -> None:
        """POST ``a`` until an answer, a stop reason, or the run moves on; never leaves it held."""
        attempt = 1
        try:
            while True:
                result = await self._post(a, attempt)
                if result is None:  # stopping: the POST was cut off
                    await self._give_back([a], "the server is stopping", posted=True)
                    return
                touch = self.breaker != push.Breaker() or time.monotonic() >= self._touch_after
                breaker = await d.record(self._svc, self.target, a, attempt, result, touch=touch)
                if touch:
                    self._touch_after = time.monotonic() + TOUCH_S
                if breaker is not None:
                    if breaker.state == push.CLOSED and self.breaker.state != push.CLOSED:
                        log.info("endpoint %s: breaker closed, delivering again", self.target.id)
                    self.breaker = breaker
                if not result.failed:
                    self.held.pop(a.run_id, None)
                    return
                reason = self._no_retry(attempt, breaker)
                if reason is None:
                    await _wait(self._stopping, self._retry_delay_s(attempt))
                    # The breaker may have opened meanwhile (other deliveries' failures, or another replica's).
                    reason = self._no_retry(attempt, self.breaker)
                if reason is not None:
                    await self._give_back([a], reason, posted=True)
                    return
                fresh = await d.refresh(self._svc, self.target, a)
                if fresh is None:  # the run moved on (cancelled ...), or a pause of it is requested
                    await self._give_back([a], "a pause was requested while it waited", posted=True)
                    return
                a, attempt = fresh, attempt + 1
                self.held[a.run_id] = a.revision
        except asyncio.CancelledError:
            raise  # stop() gives back what is still held
        except Exception:
            log.exception("endpoint %s: delivery of run %s failed", self.target.id, a.run_id)
            with contextlib.suppress(Exception):
                await self._give_back([a], "its delivery failed in the server", posted=True)

    def _retry_delay_s(self, attempt: int) -> float:
        settings = self._svc.settings
        base_ms, max_ms = settings.endpoint_retry_base_ms, settings.endpoint_retry_max_ms
        return push.retry_delay_ms(attempt, base_ms, max_ms, self._random.random) / 1000

    def _no_retry(self, attempt: int, breaker: push.Breaker | None) -> str | None:
        """Why a failed delivery is not tried again (the run goes back to the queue), or None."""
        if breaker is None:
            return "the endpoint is gone"
        if breaker.state != push.CLOSED:
            return "the endpoint's breaker is open"
        if attempt >= self._svc.settings.endpoint_max_attempts:
            return f"{attempt} deliveries failed"
        if self._stopping.is_set():
            return "the server is stopping"
        return None

    async def _post(self, a: v.Activation, attempt: int) -> d.PostResult | None:
        """The POST, in a task of its own so that stopping can cut it off; None when it was."""
        self.posts += 1
        post = asyncio.create_task(d.post(self._svc, self.target, self._session, a, attempt))
        self._posts.add(post)
        try:
            await asyncio.wait({post})
        except asyncio.CancelledError:
            post.cancel()
            raise
        finally:
            self._posts.discard(post)
        return None if post.cancelled() else post.result()

    async def _give_back(self, activations: list[v.Activation], reason: str, *, posted: bool) -> None:
        held = {a.run_id: a.revision for a in activations}
        for run_id in held:
            self.held.pop(run_id, None)
        await d.give_back(self._svc, self.target, held, f"{self.target.worker_id}: {reason}", posted=posted)

    async def _keep_leases(self) -> None:
        """Heartbeat the leases of the runs held (the endpoint never does) until closed."""
        store = executor_store(self._svc.db, self.target.namespace_id)
        interval_s = self._svc.settings.heartbeat_interval_ms / 1000
        while not await _wait(self._closed, interval_s):
            held = dict(self.held)
            if not held:
                continue
            now = now_ms()
            try:
                await store.heartbeat(self.target.worker_id, held, now, now + self._svc.settings.lease_ttl_ms)
            except Exception:
                log.exception("endpoint %s: keeping %d leases failed", self.target.id, len(held))

    # -- stopping ---------------------------------------------------------------------------------

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop claiming; let POSTs in flight finish within ``grace_s``; give back what is still held."""
        self._stopping.set()
        self._end_claim()
        if self._main is not None:
            await asyncio.wait({self._main}, timeout=0.5)
        await self._end_deliveries(grace_s)
        self._closed.set()
        await _finish(self._main, self._keeper)
        if self.held:
            left = dict(self.held)
            self.held.clear()
            try:
                await d.give_back(self._svc, self.target, left, f"{self.target.worker_id}: stopping", posted=True)
            except Exception:
                log.exception("endpoint %s: giving back %d runs at stop failed", self.target.id, len(left))
        await self._session.close()

    async def _end_deliveries(self, grace_s: float) -> None:
        """Deliveries in flight get ``grace_s`` to finish; then their POSTs are cut off (each gives
        its run back), and what still runs half a second later is cancelled (its run stays in ``held``)."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=grace_s)
        for post in list(self._posts):
            post.cancel()
        if not self._deliveries:
            return
        _, pending = await asyncio.wait(set(self._deliveries), timeout=0.5)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


async def _finish(*tasks: asyncio.Task[None] | None) -> None:
    """Let ``tasks`` end (within half a second), cancelling those that do not."""
    running = {t for t in tasks if t is not None}
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=0.5)
    for task in pending:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
