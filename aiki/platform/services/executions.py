"""The worker protocol's use cases: register a worker, claim runs, heartbeat, watch.

The executor's writes to the runs it holds are commands (``services/commands``); a worker stopping
hands its leases back through ``services/leases.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["EMPTY_STATE", "activation", "claim", "heartbeat", "register_worker", "watch"]

import msgspec

from aiki.platform.db.catalog_repo import CatalogRepository
from aiki.platform.db.executor_store import EMPTY_STATE, executor_store
from aiki.platform.domain import values as v
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.queries import normalize_pools
from aiki.platform.services.context import Services, dump
from aiki.platform.services.endpoints import refuse_versions_served_by_endpoints
from aiki.platform.services.handoff import Offer
from aiki.platform.services.rows import activation
from aiki.worker_sdk import protocol as p


async def register_worker(svc: Services, ns: str, req: p.RegisterWorkerRequest) -> v.WorkerRegistration:
    """Register (or register again) a worker and the versions it serves, with their schemas.

    Raises:
        VersionServedElsewhere: an enabled push endpoint of the namespace serves one of the versions.
    """
    await refuse_versions_served_by_endpoints(svc, ns, [(s.workflow, s.version) for s in req.versions])
    now = now_ms()
    async with svc.db.transaction() as conn:
        catalog = CatalogRepository(conn, ns, dialect=svc.db.dialect)
        for spec in req.versions:
            await catalog.upsert_version(
                new_id(),
                new_id(),
                spec.workflow,
                spec.version,
                dump(spec.input_schema),
                dump(spec.event_schemas),
                now,
                spec.timeout_ms,
            )
            if spec.timeout_ms is not None:
                await catalog.time_limit_unstarted_runs(spec.workflow, spec.version, spec.timeout_ms)
        await catalog.upsert_worker(
            {
                "id": req.worker_id,
                "host": req.host,
                "versions": msgspec.json.encode([[s.workflow, s.version] for s in req.versions]).decode(),
                "pools": msgspec.json.encode(normalize_pools(req.pools)).decode(),
                "pid": req.pid,
                "concurrency": req.concurrency,
                "started_at": now,
                "last_heartbeat_at": now,
            }
        )
    for spec in req.versions:
        svc.forget_version(ns, spec.workflow, spec.version)
    return v.WorkerRegistration(
        worker_id=req.worker_id,
        lease_ttl_ms=svc.settings.lease_ttl_ms,
        heartbeat_interval_ms=svc.settings.heartbeat_interval_ms,
        payload_max_bytes=svc.settings.max_payload_bytes,
        sleep_hold_max_ms=svc.settings.sleep_hold_max_ms or None,
    )


# A claim that passed over runs another transaction held looks again this soon, doubling while
# they stay held: that transaction may commit without changing them (an event sent to a run already
# queued, a parent locking its queued child to wait for it), and then nothing announces them again.
_SKIPPED_RETRY_S = 0.005
_SKIPPED_RETRY_MAX_S = 0.25


async def claim(
    svc: Services, ns: str, req: p.ClaimRequest, gone: asyncio.Future[None] | None = None
) -> list[v.Activation]:
    """Lease up to ``max_runs`` ready runs, waiting up to ``wait_ms`` for one to become ready.

    ``gone`` completes when the claimer can no longer receive the answer (its connection closed):
    the claim then stops waiting and claims nothing, and runs it claimed meanwhile go back to the
    queue at once (their revision moves on; no recovery is used).
    """
    versions = [(r.workflow, r.version) for r in req.versions]
    pools = normalize_pools(req.pools)
    limit = max(1, min(req.max_runs, svc.settings.claim_batch_limit))
    deadline = time.monotonic() + max(0, req.wait_ms) / 1000
    key = f"ready:{ns}"
    claims = svc.claims
    recheck_s = svc.settings.wake_recheck_ms / 1000
    retry_s = _SKIPPED_RETRY_S
    # Right after a claim that found nothing and was then handed a run, nothing else is queued.
    skip_look = claims.nothing_since(ns, req.worker_id, versions, pools, svc.hub.version(key))
    while True:
        if (gone is not None and gone.done()) or svc.hub.closed:
            return []
        since = svc.hub.version(key)
        activations, skipped = (
            ([], False) if skip_look else await _claim_once(svc, ns, req.worker_id, versions, pools, limit)
        )
        skip_look = False
        if activations and gone is not None and gone.done():
            await _hand_back(svc, ns, req.worker_id, activations)
            return []
        remaining = deadline - time.monotonic()
        if activations or remaining <= 0 or not versions:
            # Runs passed over are still there: the next claim must look, not trust the wake-ups.
            if not activations and versions and not skipped:
                claims.found_nothing(ns, req.worker_id, versions, pools, since)
            return activations
        # While it waits, a run started in this process may be handed to it (handoff.py). Look
        # again now and then in case a wake-up from another process was missed; soon when runs
        # were passed over.
        wait_s = min(remaining, recheck_s)
        if skipped:
            wait_s = min(wait_s, retry_s)
            retry_s = min(retry_s * 2, _SKIPPED_RETRY_MAX_S)
        else:
            retry_s = _SKIPPED_RETRY_S
        if svc.hub.closed:  # the server is stopping: answer now rather than be cut off
            return []
        handed = await _parked(svc, ns, req.worker_id, versions, pools, since, wait_s, gone)
        if handed is not None:
            if gone is not None and gone.done():
                await _hand_back(svc, ns, req.worker_id, [handed])
                return []
            if not skipped:
                claims.found_nothing(ns, req.worker_id, versions, pools, since)
            return [handed]


async def _parked(
    svc: Services,
    ns: str,
    worker_id: str,
    versions: list[tuple[str, str]],
    pools: list[str],
    since: int,
    wait_s: float,
    gone: asyncio.Future[None] | None,
) -> v.Activation | None:
    """Wait up to ``wait_s`` for a wake-up of ``ready:<ns>``; the run handed over meanwhile, if any."""
    claims = svc.claims
    offer = claims.park(ns, worker_id, versions, pools)
    withdraw = None
    if gone is not None:
        withdraw = _withdraw_when_gone(offer)
        gone.add_done_callback(withdraw)
    try:
        await svc.hub.wait(f"ready:{ns}", since, wait_s, offer.future)
    finally:
        claims.withdraw(offer)
        if gone is not None and withdraw is not None:
            gone.remove_done_callback(withdraw)
    return offer.future.result() if offer.future.done() and not offer.future.cancelled() else None


def _withdraw_when_gone(offer: Offer) -> Callable[[asyncio.Future[None]], None]:
    """A callback that ends the parked ``offer``'s wait: completed before a handoff takes it, it
    is never taken (a handoff already under way sees it done and puts its run back itself)."""

    def withdraw(_gone: asyncio.Future[None]) -> None:
        if not offer.future.done():
            offer.future.set_result(None)

    return withdraw


async def _hand_back(svc: Services, ns: str, worker_id: str, activations: list[v.Activation]) -> None:
    """Runs claimed for a claimer that is gone go back to the queue, as if never claimed."""
    store = executor_store(svc.db, ns)
    reason = f"claimed by {worker_id}, whose request had ended: handed back"
    await store.requeue([(a.run_id, a.revision) for a in activations], worker_id, reason, now_ms())
    svc.hub.notify(f"ready:{ns}")
    if not store.announces_status_changes:
        for a in activations:
            svc.hub.notify(f"run:{a.run_id}")


async def _claim_once(
    svc: Services, ns: str, worker_id: str, versions: list[tuple[str, str]], pools: list[str], limit: int
) -> tuple[list[v.Activation], bool]:
    """The activations of the runs claimed, and whether claimable runs were passed over (held by
    another transaction: look again soon)."""
    if not versions:
        return [], False
    now = now_ms()
    ttl = svc.settings.lease_ttl_ms
    store = executor_store(svc.db, ns)
    claimed = await store.claim(versions, pools, limit, worker_id, now, now + ttl)
    if any(r["deadline_at"] is not None for r in claimed.runs):
        svc.hub.notify("timer")
    if not store.announces_status_changes:
        for r in claimed.runs:
            svc.hub.notify(f"run:{r['id']}")
    return [activation(r, claimed.state[r["id"]], ttl) for r in claimed.runs], claimed.skipped


async def heartbeat(svc: Services, ns: str, req: p.HeartbeatRequest) -> v.HeldRuns:
    now = now_ms()
    held = {r.run_id: r.revision for r in req.runs}
    stale, paused = await executor_store(svc.db, ns).heartbeat(
        req.worker_id, held, now, now + svc.settings.lease_ttl_ms
    )
    return v.HeldRuns(stale=stale, paused=paused)


# The longest a watch stays parked (the worker asks for less; see worker_sdk/worker.py).
WATCH_MAX_MS = 60_000


async def watch(svc: Services, ns: str, req: p.WatchRequest) -> v.HeldRuns:
    """Answer as soon as one of the executions ``req.runs`` must stop, or after ``req.wait_ms``.

    An execution must stop at once when its run's revision moved on (cancelled, timed out,
    recovered: ``stale``), or at its next step boundary when a pause of it is requested
    (``paused``). Every such change is a status change, announced on ``run:<id>`` (in this process
    by the service that made it, from other processes through PostgreSQL NOTIFY or Redis), so the
    watch reads the runs, waits for one of their keys, and reads again. A newer watch of the same
    worker answers an older one parked in this process (or, through Redis, on another server) at
    once (empty): the worker sends a new watch whenever it starts executing runs, without closing
    the old request.
    """
    held = {r.run_id: r.revision for r in req.runs}
    known = set(req.pausing)  # already told: answer only once they are fenced
    mine = f"watch:{ns}:{req.worker_id}"
    # Ends an older watch parked in this process, and through the Redis relay (if configured;
    # it never echoes) one on another server. PostgreSQL NOTIFY does not carry it: that would cost
    # every watch a round trip, and its echo would end the watch itself. Without Redis, an older
    # watch on another server ends at its own ``wait_ms``.
    svc.hub.notify(mine)
    superseded_after = svc.hub.version(mine)
    if not held:
        return v.HeldRuns(stale=[], paused=[])
    deadline = time.monotonic() + max(0, min(req.wait_ms, WATCH_MAX_MS)) / 1000
    keys = [f"run:{run_id}" for run_id in held]
    while True:
        since = {key: svc.hub.version(key) for key in keys}
        since[mine] = superseded_after
        rows = await executor_store(svc.db, ns).held_states(list(held))
        found = {r["id"]: r for r in rows}
        stale = [run_id for run_id, rev in held.items() if run_id not in found or found[run_id]["revision"] != rev]
        paused = [
            r["id"]
            for r in rows
            if r["revision"] == held[r["id"]]
            and r["status"] == "paused"
            and r["lease_owner"] is not None
            and r["id"] not in known
        ]
        remaining = deadline - time.monotonic()
        if stale or paused or remaining <= 0:
            return v.HeldRuns(stale=stale, paused=paused)
        if svc.hub.closed:  # the server is stopping: answer now rather than be cut off
            return v.HeldRuns(stale=[], paused=[])
        # Look again now and then in case a wake-up from another process was missed.
        await svc.hub.wait_any(since, min(remaining, svc.settings.wake_recheck_ms / 1000))
        if svc.hub.version(mine) != superseded_after:
            return v.HeldRuns(stale=[], paused=[])
