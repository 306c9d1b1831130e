"""Client-facing use cases: start a run, read it, send it an event, cancel it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from aiki.platform.db.errors import is_deadlock, is_unique_violation
from aiki.platform.db.executor_store import EMPTY_STATE
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.db.wakeups import RECHECK_S
from aiki.platform.domain import run_states
from aiki.platform.domain import values as v
from aiki.platform.domain.errors import InvalidTransition, ReferenceConflict, RunNotFound
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.queries import normalize_pool
from aiki.platform.services.children import cancel_descendants, end_run, notify_parent
from aiki.platform.services.context import Services, check_payload, version_or_none
from aiki.platform.services.context import input_hash as hash_input
from aiki.platform.services.handoff import Offer
from aiki.platform.services.rows import activation, history_entry
from aiki.platform.services.rows import run as run_view
from aiki.worker_sdk import protocol as p


async def start_run(svc: Services, ns: str, req: p.StartRunRequest) -> v.StartedRun:
    # A version no worker registered yet is accepted unless the caller asks otherwise: the run
    # waits in `queued`, and the worker that registers the version checks the input when it
    # claims the run (a misfit fails the run with a validation error naming the field).
    info = await version_or_none(svc, ns, req.workflow, req.version, req.require_registered)
    if info is not None:
        check_payload(info.input_validator, req.input, "input")
    timeout_ms = info.timeout_ms if info is not None else None
    raw_input = msgspec.json.encode(req.input)
    input_hash = hash_input(req.input) if req.reference_id is not None else None
    now = now_ms()
    delayed = req.delay_ms is not None and req.delay_ms > 0
    status = run_states.next_status("start_delayed" if delayed else "start", None)
    run_id = new_id()
    since = svc.hub.version(f"run:{run_id}")  # for remember_started: taken before the insert
    values: dict[str, Any] = {
        "id": run_id,
        "workflow_name": req.workflow,
        "version": req.version,
        "status": status,
        "revision": 0,
        "attempt": 1,
        "recoveries": 0,
        "max_recoveries": svc.settings.max_recoveries,
        "input": raw_input.decode(),
        "input_hash": input_hash,
        "reference_id": req.reference_id,
        "pool": normalize_pool(req.pool, "$.pool"),
        "retry": msgspec.json.encode(req.retry).decode() if req.retry is not None else None,
        "timeout_ms": timeout_ms,
        "wake_at": now + req.delay_ms if delayed and req.delay_ms is not None else None,
        "queued_at": None if delayed else now,
        "created_at": now,
        "updated_at": now,
    }
    # A claimer of this process waiting for such a run gets it directly (handoff.py); a run
    # with a reference id may turn out to exist already, so it is queued as usual.
    offer = None
    if not delayed and req.reference_id is None:
        offer = svc.claims.take(ns, req.workflow, req.version, values["pool"])
    if offer is not None:
        return await _start_handed(svc, ns, values, timeout_ms, offer, since)
    if req.reference_id is None:
        # Nothing to look up first: the run and its history row (one statement where it can be).
        async with svc.db.atomic() as conn:
            await RunRepository(conn, ns).insert_started(values)
    else:
        existing = await _insert_unless_referenced(svc, ns, req, values, input_hash)
        if existing is not None:
            return existing
    svc.hub.notify("timer" if delayed else f"ready:{ns}")
    view = run_view(_new_row(ns, values))
    svc.remember_started(ns, view, since)
    return v.StartedRun(run=view, created=True)


def _new_row(ns: str, values: dict[str, Any]) -> dict[str, Any]:
    """A run row as just inserted from ``values``: every other column at its default."""
    return {
        "namespace_id": ns,
        "output": None,
        "error": None,
        "parent_run_id": None,
        "finished_at": None,
        "parent_address": None,
        "parent_seq": None,
        "deadline_at": None,
        "resume_at": None,
        **values,
    }


async def _start_handed(
    svc: Services, ns: str, values: dict[str, Any], timeout_ms: int | None, offer: Offer, since: int
) -> v.StartedRun:
    """Insert the run claimed by ``offer``'s worker, as its claim would, and hand it over."""
    # The offer was withdrawn from the exchange; out of the hub too, so no wake-up completes it.
    svc.hub.forget(f"ready:{ns}", offer.future)
    now = values["created_at"]
    ttl = svc.settings.lease_ttl_ms
    values.update(
        status="running",
        revision=1,
        lease_owner=offer.worker_id,
        wake_at=now + ttl,
        queued_at=None,
        started_at=now,
        # The execution deadline runs from the first claim, as ``RunRepository.claim`` sets it.
        deadline_at=now + timeout_ms if timeout_ms is not None else None,
    )
    try:
        async with svc.db.atomic() as conn:
            await RunRepository(conn, ns).insert_claimed(values, f"claimed by {offer.worker_id}")
    except BaseException:
        if not offer.future.done():
            offer.future.set_result(None)  # the claimer looks again
        raise
    if values["deadline_at"] is not None:
        svc.hub.notify("timer")
    row = _new_row(ns, values)
    if offer.future.done():
        # The claimer stopped waiting while the run was being inserted: back to the queue.
        await _requeue_unstarted(svc, ns, values["id"], offer.worker_id)
        async with svc.db.autocommit() as conn:
            current = await RunRepository(conn, ns).get(values["id"])
        return v.StartedRun(run=run_view(current or row), created=True)
    view = run_view(row)
    svc.remember_started(ns, view, since)
    offer.future.set_result(activation(row, EMPTY_STATE, ttl))
    return v.StartedRun(run=view, created=True)


async def _requeue_unstarted(svc: Services, ns: str, run_id: str, worker_id: str) -> None:
    reason = f"handed to {worker_id}, which had stopped waiting"
    async with svc.db.raw_transaction() as conn:
        await RunRepository(conn, ns).requeue_unstarted(run_id, worker_id, reason, now_ms())
    svc.hub.notify(f"ready:{ns}")


async def _insert_unless_referenced(
    svc: Services, ns: str, req: p.StartRunRequest, values: dict[str, Any], input_hash: str | None
) -> v.StartedRun | None:
    """Insert the run unless its reference id already names one: then answer that one."""
    for _ in range(3):
        try:
            async with svc.db.raw_transaction() as conn:
                repo = RunRepository(conn, ns)
                if req.reference_id is not None:
                    existing = await repo.find_by_reference(req.workflow, req.version, req.reference_id)
                    if existing is not None:
                        if existing["input_hash"] != input_hash and req.conflict != "return_existing":
                            raise ReferenceConflict(
                                f"reference id {req.reference_id!r} already names run {existing['id']} "
                                "of this workflow version with a different input",
                                run_id=existing["id"],
                            )
                        return v.StartedRun(run=run_view(existing), created=False)
                await repo.insert_started(values)
            return None
        except Exception as exc:
            # Another request inserted the same reference id at the same moment: look again.
            if req.reference_id is None or not is_unique_violation(exc):
                raise
    # pragma: no cover - three concurrent losers in a row
    raise ReferenceConflict(f"reference id {req.reference_id!r} is being used concurrently")


async def get_run(svc: Services, ns: str, run_id: str) -> v.Run:
    ended = svc.terminal_view(ns, run_id)
    if ended is not None:
        return ended
    async with svc.db.autocommit() as conn:
        row = await RunRepository(conn, ns).get(run_id)
    if row is None:
        raise RunNotFound(run_id)
    return run_view(row)


async def wait_for_run(svc: Services, ns: str, run_id: str, statuses: Iterable[str], timeout_s: float) -> v.Run:
    """The run once its status is one of ``statuses`` or terminal, or as it is at the timeout."""
    wanted = set(statuses) | run_states.TERMINAL
    deadline = time.monotonic() + max(0.0, timeout_s)
    key = f"run:{run_id}"
    # A run this process just started and that has not changed since: known without a read, when
    # that is only to decide to wait (an answer is always read).
    started = svc.started_view(ns, run_id)
    while True:
        if started is not None and started[1].status not in wanted and deadline > time.monotonic():
            since, view = started
        else:
            since = svc.hub.version(key)
            view = await get_run(svc, ns, run_id)
        started = None
        remaining = deadline - time.monotonic()
        if view.status in wanted or remaining <= 0 or svc.hub.closed:
            return view
        # Re-read now and then: a notification from another process may be lost.
        await svc.hub.wait(key, since, min(remaining, RECHECK_S))


async def run_history(svc: Services, ns: str, run_id: str) -> list[v.HistoryEntry]:
    async with svc.db.autocommit() as conn:
        repo = RunRepository(conn, ns)
        if not await repo.exists(run_id):
            raise RunNotFound(run_id)
        return [history_entry(r) for r in await repo.history(run_id)]


async def send_event(svc: Services, ns: str, run_id: str, name: str, req: p.SendEventRequest) -> v.SentEvent:
    # Validate before the transaction: the schema comes from the run's version.
    async with svc.db.autocommit() as conn:
        head = await RunRepository(conn, ns).get(run_id)
    if head is None:
        raise RunNotFound(run_id)
    info = await version_or_none(svc, ns, head["workflow_name"], head["version"], False)
    if info is not None:
        validator = svc.event_validator(info, head["workflow_name"], head["version"], name)
        check_payload(validator, req.data, f"event {name!r}")
    # else: the run was started before any worker registered its version; the event is buffered
    # unchecked and the worker decodes it into the declared type when the run waits for it.
    data = msgspec.json.encode(req.data)
    now = now_ms()
    woke = False
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        steps = StepRepository(conn, ns)
        run = await runs.get(run_id, lock=True)
        if run is None:
            raise RunNotFound(run_id)
        if req.reference_id is not None:
            existing = await steps.find_event(run_id, name, req.reference_id)
            if existing is not None:
                return v.SentEvent(event_id=existing["id"], created=False)
        if run_states.is_terminal(run["status"]):
            raise InvalidTransition(f"run {run_id} is {run['status']}: it takes no more events", run_id=run_id)
        event_id = new_id()
        await steps.append_event(event_id, run_id, name, data.decode(), req.reference_id, now)
        if run["status"] == "awaiting_event" and run["wait_event"] == name:
            await _requeue(runs, run, now, "event_arrived", f"event {name!r} arrived")
            woke = True
    if woke:
        svc.hub.notify(f"ready:{ns}")
        svc.hub.notify(f"run:{run_id}")  # its status changed: waits on it (also via Redis) look again
    return v.SentEvent(event_id=event_id, created=True)


async def _requeue(runs: RunRepository, run: Any, now: int, action: str, reason: str) -> None:
    target = run_states.next_status(action, run["status"])
    await runs.update(
        run["id"],
        {
            "status": target,
            "queued_at": now,
            "wake_at": None,
            # wait_event/wait_seq stay: the next activation names the wait it resumes (replay.py).
            "updated_at": now,
        },
    )
    await runs.add_history(
        [
            {
                "run_id": run["id"],
                "attempt": run["attempt"],
                "from_status": run["status"],
                "to_status": target,
                "reason": reason,
                "created_at": now,
            }
        ]
    )


async def cancel_run(svc: Services, ns: str, run_id: str, reason: str | None) -> v.Run:
    """Cancel a live run and, on the server, every live descendant; wake a parent waiting for it."""
    for attempt in range(3):
        try:
            return await _cancel_once(svc, ns, run_id, reason)
        except Exception as exc:
            # Cancelling a tree locks top-down while a child ending locks child then parent.
            if not is_deadlock(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _cancel_once(svc: Services, ns: str, run_id: str, reason: str | None) -> v.Run:
    now = now_ms()
    notify = [f"run:{run_id}"]
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        run = await runs.get(run_id, lock=True)
        if run is None:
            raise RunNotFound(run_id)
        if run["status"] == "cancelled":
            return run_view(run)
        run_states.check_action("cancel", run_id, run["status"])
        error = p.ErrorInfo(type="Cancelled", message=reason or "cancelled", cause="cancelled")
        steps = StepRepository(conn, ns)
        await end_run(runs, steps, run, action="cancel", error=error, reason=reason or "cancelled", now=now)
        notify += [f"run:{c}" for c in await cancel_descendants(runs, steps, [run_id], now)]
        parent = await notify_parent(runs, run, "cancelled", now)
        if parent is not None:
            notify += [f"run:{parent}", f"ready:{ns}"]
        row = await runs.get(run_id)
    assert row is not None
    for key in notify:
        svc.hub.notify(key)
    return run_view(row)
