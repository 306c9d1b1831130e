"""The worker protocol's use cases: register, claim, heartbeat, record a task, transition a run.

Every executor write is fenced: it names the run revision its claim returned, and a run that moved
on (cancelled, recovered by another worker) answers :class:`StaleRevision` and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from aiki.platform.db.catalog_repo import CatalogRepository, WorkerHeartbeats
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain.errors import InputInvalid, RunNotFound, StaleRevision, TaskConflict
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.queries import normalize_pools
from aiki.platform.services.children import child_record, child_wait_key, notify_parent
from aiki.platform.services.context import Services, dump
from aiki.platform.services.handoff import Offer
from aiki.platform.services.views import encode_error, event_record, retry_policy, run_view, task_record
from aiki.worker_sdk import protocol as p


async def register_worker(svc: Services, ns: str, req: p.RegisterWorkerRequest) -> p.RegisterWorkerResponse:
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
                "versions": msgspec.json.encode([[v.workflow, v.version] for v in req.versions]).decode(),
                "pools": msgspec.json.encode(normalize_pools(req.pools)).decode(),
                "pid": req.pid,
                "concurrency": req.concurrency,
                "started_at": now,
                "last_heartbeat_at": now,
            }
        )
    for spec in req.versions:
        svc.forget_version(ns, spec.workflow, spec.version)
    return p.RegisterWorkerResponse(
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
) -> p.ClaimResponse:
    """Lease up to ``max_runs`` ready runs, waiting up to ``wait_ms`` for one to become ready.

    ``gone`` completes when the claimer can no longer receive the answer (its connection closed):
    the claim then stops waiting and claims nothing, and runs it claimed meanwhile go back to the
    queue at once (their revision moves on; no recovery is used).
    """
    versions = [(v.workflow, v.version) for v in req.versions]
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
        if gone is not None and gone.done():
            return p.ClaimResponse(activations=[])
        since = svc.hub.version(key)
        activations, skipped = (
            ([], False) if skip_look else await _claim_once(svc, ns, req.worker_id, versions, pools, limit)
        )
        skip_look = False
        if activations and gone is not None and gone.done():
            await _hand_back(svc, ns, req.worker_id, activations)
            return p.ClaimResponse(activations=[])
        remaining = deadline - time.monotonic()
        if activations or remaining <= 0 or not versions:
            # Runs passed over are still there: the next claim must look, not trust the wake-ups.
            if not activations and versions and not skipped:
                claims.found_nothing(ns, req.worker_id, versions, pools, since)
            return p.ClaimResponse(activations=activations)
        # While it waits, a run started in this process may be handed to it (handoff.py). Look
        # again now and then in case a wake-up from another process was missed; soon when runs
        # were passed over.
        wait_s = min(remaining, recheck_s)
        if skipped:
            wait_s = min(wait_s, retry_s)
            retry_s = min(retry_s * 2, _SKIPPED_RETRY_MAX_S)
        else:
            retry_s = _SKIPPED_RETRY_S
        offer = claims.park(ns, req.worker_id, versions, pools)
        withdraw = None
        if gone is not None:
            withdraw = _withdraw_when_gone(offer)
            gone.add_done_callback(withdraw)
        try:
            await svc.hub.wait(key, since, wait_s, offer.future)
        finally:
            claims.withdraw(offer)
            if gone is not None and withdraw is not None:
                gone.remove_done_callback(withdraw)
        handed = offer.future.result() if offer.future.done() and not offer.future.cancelled() else None
        if handed is not None:
            if gone is not None and gone.done():
                await _hand_back(svc, ns, req.worker_id, [handed])
                return p.ClaimResponse(activations=[])
            if not skipped:
                claims.found_nothing(ns, req.worker_id, versions, pools, since)
            return p.ClaimResponse(activations=[handed])


def _withdraw_when_gone(offer: Offer) -> Callable[[asyncio.Future[None]], None]:
    """A callback that ends the parked ``offer``'s wait: completed before a handoff takes it, it
    is never taken (a handoff already under way sees it done and puts its run back itself)."""

    def withdraw(_gone: asyncio.Future[None]) -> None:
        if not offer.future.done():
            offer.future.set_result(None)

    return withdraw


async def _hand_back(svc: Services, ns: str, worker_id: str, activations: list[p.Activation]) -> None:
    """Runs claimed for a claimer that is gone go back to the queue, as if never claimed."""
    now = now_ms()
    reason = f"claimed by {worker_id}, whose request had ended: handed back"
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        for a in activations:
            await runs.requeue_unstarted(a.run_id, worker_id, reason, now, revision=a.revision)
    svc.hub.notify(f"ready:{ns}")
    if not svc.db.is_postgres:
        for a in activations:
            svc.hub.notify(f"run:{a.run_id}")  # PostgreSQL's trigger announces a status change


EMPTY_STATE: dict[str, list[Any]] = {"tasks": [], "events": [], "sleeps": [], "wait_timeouts": [], "children": []}


async def _claim_once(
    svc: Services, ns: str, worker_id: str, versions: list[tuple[str, str]], pools: list[str], limit: int
) -> tuple[list[p.Activation], bool]:
    """The activations of the runs claimed, and whether claimable runs were passed over (held by
    another transaction: look again soon)."""
    if not versions:
        return [], False
    now = now_ms()
    ttl = svc.settings.lease_ttl_ms
    # PostgreSQL: the claim (with its history rows) is one statement and commits on its own; the
    # replay state is read right after on the same connection. Nothing but the executor holding
    # the new revision writes tasks, sleeps or children, so reading after the commit loses nothing.
    session = svc.db.raw_read() if svc.db.is_postgres else svc.db.raw_transaction()
    async with session as conn:
        claimed, skipped = await RunRepository(conn, ns).claim(versions, pools, limit, worker_id, now, now + ttl)
        if not claimed:
            return [], skipped
        # Revision 1 is the first claim ever (every claim bumps it): such a run has no history yet.
        first = [r["id"] for r in claimed if r["revision"] == 1]
        # ... and when the claim saw no event for it either, there is nothing to read at all.
        bare = {r["id"] for r in claimed if r["revision"] == 1 and r.get("has_events", True) is False}
        to_read = [r["id"] for r in claimed if r["id"] not in bare]
        state = await StepRepository(conn, ns).state_for(to_read, first_claims=first)
        state.update({run_id: EMPTY_STATE for run_id in bare})
    if any(r["deadline_at"] is not None for r in claimed):
        svc.hub.notify("timer")
    if not svc.db.is_postgres:
        # Each run changed status (PostgreSQL's trigger announces that; SQLite has none).
        for r in claimed:
            svc.hub.notify(f"run:{r['id']}")
    return [activation(r, state[r["id"]], ttl) for r in claimed], skipped


def activation(r: Any, s: dict[str, list[Any]], lease_ttl_ms: int) -> p.Activation:
    """What the executor of a claimed run needs: the run as claimed (``r``) and its state ``s``."""
    return p.Activation(
        run_id=r["id"],
        revision=r["revision"],
        workflow=r["workflow_name"],
        version=r["version"],
        attempt=r["attempt"],
        input=msgspec.Raw(r["input"].encode()),
        lease_ttl_ms=lease_ttl_ms,
        tasks=[task_record(t) for t in s["tasks"]],
        events=[event_record(e) for e in s["events"]],
        sleeps=[
            p.SleepRecord(name=x["name"], seq=x["seq"], status=x["status"], wake_at=x["wake_at"]) for x in s["sleeps"]
        ],
        wait_timeouts=[p.WaitTimeoutRecord(name=w["name"], seq=w["seq"]) for w in s["wait_timeouts"]],
        retry=retry_policy(r["retry"]),
        reference_id=r["reference_id"],
        children=[child_record(c) for c in s["children"]],
        deadline_at=r["deadline_at"],
        resumed_wait=p.WaitRef(name=r["wait_event"], seq=r["wait_seq"] or 0) if r.get("wait_event") else None,
    )


async def heartbeat(svc: Services, ns: str, req: p.HeartbeatRequest) -> p.HeartbeatResponse:
    now = now_ms()
    async with svc.db.raw_transaction() as conn:
        await WorkerHeartbeats(conn, ns).seen(req.worker_id, now)
        stale, paused = await RunRepository(conn, ns).heartbeat(
            req.worker_id, {r.run_id: r.revision for r in req.runs}, now, now + svc.settings.lease_ttl_ms
        )
    return p.HeartbeatResponse(stale=stale, paused=paused)


# The longest a watch stays parked (the worker asks for less; see worker_sdk/worker.py).
WATCH_MAX_MS = 60_000


async def watch(svc: Services, ns: str, req: p.WatchRequest) -> p.WatchResponse:
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
        return p.WatchResponse()
    deadline = time.monotonic() + max(0, min(req.wait_ms, WATCH_MAX_MS)) / 1000
    keys = [f"run:{run_id}" for run_id in held]
    while True:
        since = {key: svc.hub.version(key) for key in keys}
        since[mine] = superseded_after
        async with svc.db.raw_read() as conn:
            rows = await RunRepository(conn, ns).held_states(list(held))
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
            return p.WatchResponse(stale=stale, paused=paused)
        # Look again now and then in case a wake-up from another process was missed.
        await svc.hub.wait_any(since, min(remaining, svc.settings.wake_recheck_ms / 1000))
        if svc.hub.version(mine) != superseded_after:
            return p.WatchResponse()


async def _fence_failed(runs: RunRepository, run_id: str, revision: int) -> StaleRevision | RunNotFound:
    return StaleRevision(run_id, revision) if await runs.exists(run_id) else RunNotFound(run_id)


def _task_values(req: p.RecordTaskRequest, now: int) -> dict[str, Any]:
    """The ``tasks`` row a record request writes."""
    return {
        "id": new_id(),
        "address": req.address,
        "seq": req.seq,
        "name": req.name,
        "status": req.status,
        "attempts": req.attempts,
        "input": msgspec.json.encode(req.input).decode(),
        "output": msgspec.json.encode(req.output).decode() if req.status == "completed" else None,
        "error": encode_error(req.error),
        "next_attempt_at": req.next_attempt_at,
        "created_at": now,
        "updated_at": now,
    }


async def record_task(svc: Services, ns: str, run_id: str, req: p.RecordTaskRequest) -> p.RecordTaskResponse:
    now = now_ms()
    lease_until = now + svc.settings.lease_ttl_ms
    values = _task_values(req, now)
    if svc.db.is_postgres:
        # One statement, one round trip: fence + lease extension when due + upsert (StepRepository).
        extend_below = now + svc.settings.lease_ttl_ms // 2
        async with svc.db.raw_read() as conn:
            held, recorded, paused = await StepRepository(conn, ns).record_task_fenced(
                run_id, req.revision, lease_until, extend_below, values
            )
            if not held:
                raise await _fence_failed(RunRepository(conn, ns), run_id, req.revision)
            if not recorded:
                await _check_recorded(StepRepository(conn, ns), run_id, req)
        return p.RecordTaskResponse(recorded=recorded, paused=paused)
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        # Fencing and a free lease extension in one statement; it also takes the run's row lock,
        # so a concurrent cancel is ordered strictly before or after this write. A run paused
        # while the task ran is still held: the task's result is recorded (pause never makes a
        # side effect run twice) and the answer tells the executor to start nothing new.
        status = await runs.touch_if_held(run_id, req.revision, now, lease_until)
        if status is None:
            raise await _fence_failed(runs, run_id, req.revision)
        steps = StepRepository(conn, ns)
        recorded = await steps.upsert_task(run_id, values)
        if not recorded:
            await _check_recorded(steps, run_id, req)
    return p.RecordTaskResponse(recorded=recorded, paused=status == "paused")


async def _check_recorded(steps: StepRepository, run_id: str, req: p.RecordTaskRequest) -> None:
    """An entry already holds (address, seq): fine if it is this very outcome (a retried write)."""
    existing = await steps.get_task(run_id, req.address, req.seq)
    if existing is None or existing["status"] != req.status or existing["attempts"] != req.attempts:
        raise TaskConflict(
            f"task {req.name!r} entry {req.address}#{req.seq} is already recorded as "
            f"{existing['status'] if existing else 'missing'}",
            run_id=run_id,
        )


def _require(req: p.TransitionRequest, *fields: str) -> None:
    for name in fields:
        if getattr(req, name) is None:
            raise InputInvalid(f"a {req.kind!r} transition needs {name!r}", field=f"$.{name}")


_ONE_STATEMENT_KINDS = frozenset({"complete", "fail", "await_task_retry"})


async def _transition_in_one_statement(
    svc: Services, ns: str, run_id: str, req: p.TransitionRequest
) -> p.TransitionResponse | None:
    """PostgreSQL, for a top-level run and a kind that reads nothing first: fence, update and
    history in one statement (``RunRepository.finish_held``), with the task record the request
    carries (``finish_held_with_task``). None: take the general path."""
    now = now_ms()
    kind = req.kind
    target = run_states.next_status(kind, "running")
    values: dict[str, Any] = {"updated_at": now, "lease_owner": None, "status": target}
    reason: str | None = None
    if kind == "complete":
        values.update(output=msgspec.json.encode(req.output).decode(), finished_at=now, wake_at=None, deadline_at=None)
    elif kind == "fail":
        values.update(error=encode_error(req.error), finished_at=now, wake_at=None, deadline_at=None)
        reason = req.error.message if req.error else None
    else:  # await_task_retry
        values.update(wake_at=req.wake_at or now)
        reason = "task retry scheduled"
    async with svc.db.raw_read() as conn:
        runs = RunRepository(conn, ns)
        if req.task is None:
            row = await runs.finish_held(run_id, req.revision, values, reason, now)
        else:
            row = await runs.finish_held_with_task(
                run_id, req.revision, values, reason, now, _task_values(req.task, now)
            )
            if row is not None and not row["recorded"]:
                # Only the executor holding the revision writes tasks, so the entry that kept this
                # record out was written by this very executor since the statement began.
                await _check_recorded(StepRepository(conn, ns), run_id, req.task)
    if row is None:
        return None  # fenced (the general path says how), a child run, or a recorded task entry
    if run_states.is_terminal(target):
        svc.remember_terminal(ns, run_view(row))
    svc.hub.notify(f"run:{run_id}")
    if values.get("wake_at") is not None:
        svc.hub.notify("timer")
    return p.TransitionResponse(status=target, suspended=True)  # type: ignore[arg-type]


async def _until_held_sleep_ends(svc: Services, ns: str, run_id: str, req: p.TransitionRequest) -> None:
    """Park a ``resume_sleep`` until the sleep's end, or until the run changes (cancel, wake ...).

    The executor sends it as soon as the server holds the sleep: the answer then leaves at the
    sleep's end from a server that is already waiting, rather than starting a round trip then.
    """
    key = f"run:{run_id}"
    while True:
        since = svc.hub.version(key)
        async with svc.db.raw_read() as conn:
            wake_at = await StepRepository(conn, ns).sleep_wake_at(run_id, req.sleep_name or "", req.sleep_seq or 0)
        if wake_at is None:
            return  # not sleeping any more (cancelled, woken, ...): the transition says what happened
        delay_s = (wake_at - now_ms()) / 1000
        if delay_s <= 0 or not await svc.hub.wait(key, since, delay_s):
            return  # the sleep is over
        # The run changed (or another process echoed an earlier change): look again.


async def _sleep_in_one_statement(
    svc: Services, ns: str, run_id: str, req: p.TransitionRequest
) -> p.TransitionResponse | None:
    """PostgreSQL: ``sleep`` (held or not) and ``resume_sleep`` in one statement each. None: fenced
    (the general path says how)."""
    _require(req, "sleep_name", "sleep_seq")
    now = now_ms()
    name, seq = req.sleep_name or "", req.sleep_seq or 0
    async with svc.db.raw_read() as conn:
        runs = RunRepository(conn, ns)
        if req.kind == "resume_sleep":
            reason = f"sleep {name!r} ended (held by its executor)"
            if not await runs.resume_held_sleep(run_id, req.revision, now + svc.settings.lease_ttl_ms, reason, now):
                return None
            svc.hub.notify(f"run:{run_id}")
            return p.TransitionResponse(status="running", suspended=False, revision=req.revision)
        duration = max(0, req.duration_ms or 0)
        held = _holds(svc, req, duration)
        sleep = {"id": new_id(), "name": name, "seq": seq, "wake_at": now + duration}
        reason = f"sleeping {name!r}" + (" (held by its executor)" if held else "")
        grace = svc.settings.sleep_hold_grace_ms if held else None
        if await runs.sleep_held(run_id, req.revision, sleep, grace, reason, now) is None:
            return None
    svc.hub.notify(f"run:{run_id}")
    svc.hub.notify("timer")
    if held:
        return p.TransitionResponse(status="sleeping", suspended=False, held=True, revision=req.revision)
    return p.TransitionResponse(status="sleeping", suspended=True)


def _holds(svc: Services, req: p.TransitionRequest, duration_ms: int) -> bool:
    """Whether the server lets the executor hold this sleep (it asked, and it is short enough)."""
    hold_max = svc.settings.sleep_hold_max_ms
    return req.hold and bool(hold_max) and duration_ms <= hold_max


async def transition(svc: Services, ns: str, run_id: str, req: p.TransitionRequest) -> p.TransitionResponse:
    if req.kind == "resume_sleep":
        await _until_held_sleep_ends(svc, ns, run_id, req)
    one_statement = svc.db.is_postgres and req.kind in _ONE_STATEMENT_KINDS
    if one_statement and req.task is not None:
        # The record and the transition together; None when either needs the general path.
        done = await _transition_in_one_statement(svc, ns, run_id, req)
        if done is not None:
            return done
    if req.task is not None:
        # Exactly what a separate record request would do, first; a refusal refuses the whole.
        await record_task(svc, ns, run_id, req.task)
    if one_statement:
        done = await _transition_in_one_statement(svc, ns, run_id, msgspec.structs.replace(req, task=None))
        if done is not None:
            return done
    if svc.db.is_postgres and req.kind in ("sleep", "resume_sleep"):
        done = await _sleep_in_one_statement(svc, ns, run_id, req)
        if done is not None:
            return done
    now = now_ms()
    notify: list[str] = [f"run:{run_id}"]
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        run = await runs.get(run_id, lock=True)
        if run is None:
            raise RunNotFound(run_id)
        if run["revision"] != req.revision:
            raise StaleRevision(run_id, req.revision)
        # A pause is requested (the run is paused, still leased to this executor): this transition
        # is the executor's step boundary. Whatever it asks for (its task record aside, written
        # above) waits for the resume: the run is released here and its next execution replays.
        pausing = run["status"] == "paused" and run["lease_owner"] is not None
        if req.kind == "yield" and not pausing:
            if run["status"] != "running":
                raise StaleRevision(run_id, req.revision)
            # Resumed before the executor stopped: it goes on.
            return p.TransitionResponse(status="running", suspended=False, revision=run["revision"])
        held_from = "paused" if pausing else "sleeping" if req.kind == "resume_sleep" else "running"
        if run["status"] != held_from:
            raise StaleRevision(run_id, req.revision)
        steps = StepRepository(conn, ns)
        values: dict[str, Any] = {"updated_at": now, "lease_owner": None}
        reason: str | None = None
        held = False
        attempt = run["attempt"]
        kind = "yield" if pausing else req.kind
        if kind == "yield":
            # The revision moves on: nothing this executor might still send lands.
            values.update(revision=run["revision"] + 1, wake_at=None)
            reason = "stopped at a step boundary (pause requested)"
        elif kind == "await_event":
            _require(req, "event_name", "consumed", "wait_seq")
            buffered = await steps.events_from(run_id, req.event_name or "", req.consumed or 0)
            if buffered:
                # The event arrived after the executor read the run: it goes on, no suspension.
                await runs.update(run_id, {"updated_at": now, "wake_at": now + svc.settings.lease_ttl_ms})
                return p.TransitionResponse(
                    status="running",
                    suspended=False,
                    events=[event_record(e) for e in buffered],
                    revision=run["revision"],
                )
            values.update(
                wait_event=req.event_name,
                wait_seq=req.wait_seq,
                wake_at=now + req.timeout_ms if req.timeout_ms is not None else None,
            )
            reason = f"waiting for event {req.event_name!r}"
        elif kind == "await_child":
            _require(req, "child_run_id", "wait_seq")
            child = await runs.get(req.child_run_id or "", lock=True)
            if child is None or child["parent_run_id"] != run_id:
                raise InputInvalid(f"run {req.child_run_id!r} is not a child of run {run_id}", field="$.child_run_id")
            if run_states.is_terminal(child["status"]):
                # The child ended before the parent suspended: it goes on at once.
                await runs.update(run_id, {"updated_at": now, "wake_at": now + svc.settings.lease_ttl_ms})
                return p.TransitionResponse(
                    status="running", suspended=False, child=child_record(child), revision=run["revision"]
                )
            values.update(
                wait_event=child_wait_key(child["id"]),
                wait_seq=req.wait_seq,
                wake_at=now + req.timeout_ms if req.timeout_ms is not None else None,
            )
            reason = f"waiting for child {child['id']}"
        elif kind == "complete":
            values.update(
                output=msgspec.json.encode(req.output).decode(), finished_at=now, wake_at=None, deadline_at=None
            )
        elif kind == "fail":
            values.update(error=encode_error(req.error), finished_at=now, wake_at=None, deadline_at=None)
            reason = req.error.message if req.error else None
        elif kind == "retry":
            values.update(error=encode_error(req.error), wake_at=req.wake_at or now, attempt=attempt + 1)
            # Completed tasks replay in the next attempt; failed ones run again.
            await steps.discard_tasks(run_id, ["failed"], now)
            reason = f"workflow attempt {attempt} failed: {req.error.message if req.error else 'error'}"
        elif kind == "await_task_retry":
            values.update(wake_at=req.wake_at or now)
            reason = "task retry scheduled"
        elif kind == "sleep":
            _require(req, "sleep_name", "sleep_seq")
            wake_at = await steps.start_sleep(
                new_id(), run_id, req.sleep_name or "", req.sleep_seq or 0, now + max(0, req.duration_ms or 0), now
            )
            values.update(wake_at=wake_at)
            reason = f"sleeping {req.sleep_name!r}"
            if _holds(svc, req, wake_at - now):
                # The executor keeps the run (its lease stands) and resumes it itself; the server
                # steps in only a grace period after the sleep should have ended.
                held = True
                del values["lease_owner"]
                values.update(wake_at=wake_at + svc.settings.sleep_hold_grace_ms)
                reason += " (held by its executor)"
        elif kind == "resume_sleep":
            _require(req, "sleep_name", "sleep_seq")
            await steps.finish_sleeps(run_id, "completed")
            del values["lease_owner"]
            values.update(wake_at=now + svc.settings.lease_ttl_ms)
            reason = f"sleep {req.sleep_name!r} ended (held by its executor)"
        target = run_states.next_status(kind, run["status"])
        values["status"] = target
        await runs.update(run_id, values)
        await runs.add_history(
            [
                {
                    "run_id": run_id,
                    "attempt": attempt,
                    "from_status": held_from,
                    "to_status": target,
                    "reason": reason,
                    "created_at": now,
                }
            ]
        )
        if run_states.is_terminal(target) and run["parent_run_id"] is not None:
            parent = await notify_parent(runs, run, target, now)
            if parent is not None:
                notify += [f"run:{parent}", f"ready:{ns}"]
    if run_states.is_terminal(target):
        svc.remember_terminal(ns, run_view({**run, **values}))
    if values.get("wake_at") is not None:
        notify.append("timer")
    for key in notify:
        svc.hub.notify(key)
    if held or kind == "resume_sleep":
        return p.TransitionResponse(status=target, suspended=False, held=held, revision=run["revision"])  # type: ignore[arg-type]
    return p.TransitionResponse(status=target, suspended=True)  # type: ignore[arg-type]
