"""Lifecycle actions on runs (SPEC §3): pause, resume, wake, requeue; each valid only from its
statuses (400 ``action_not_allowed`` naming the action and the status), and the stall sweep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from aiki import ActionNotAllowedError, InvalidTransitionError, Run, task, workflow
from aiki.platform.domain.ids import now_ms
from aiki.platform.services import timers
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatRun,
    RegisterWorkerRequest,
    VersionRef,
    VersionSpec,
)
from tests.conftest import AikiHarness

from .helpers import API, LEDGER, WAIT, get_history, get_run, new_key, task_address

ENTERED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}


@task(name="life-blocking")
async def blocking(key: str) -> str:
    LEDGER.hit("life-blocking", key)
    ENTERED[key].set()
    await RELEASE[key].wait()
    return "released"


@task(name="life-after")
async def after(key: str) -> None:
    LEDGER.hit("life-after", key)


blocking_wf = workflow(name="life-blocking-wf")


@blocking_wf.v("1.0.0")
async def blocking_v1(run: Run, key: str) -> str:
    value = await blocking.start(run, key)
    await after.start(run, key)
    return value


napping_wf = workflow(name="life-napping-wf")


@napping_wf.v("1.0.0")
async def napping_v1(run: Run, key: str) -> dict[str, Any]:
    result = await run.sleep(timedelta(hours=1), name="nap")
    LEDGER.hit("life-after-nap", key)
    return {"cancelled": result.cancelled}


async def _action(aiki: Any, run_id: str, action: str) -> Any:
    return await aiki.http.post(f"{API}/runs/{run_id}/{action}", json={})


async def _refused(aiki: Any, run_id: str, action: str, status: str) -> None:
    resp = await _action(aiki, run_id, action)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "action_not_allowed"
    assert body["run_id"] == run_id
    assert f"cannot {action} run" in body["detail"]
    assert f"it is {status}" in body["detail"]


async def test_pause_stops_a_running_executor_at_its_step_boundary_and_resume_goes_on(aiki: Any) -> None:
    key = new_key()
    ENTERED[key], RELEASE[key] = asyncio.Event(), asyncio.Event()
    await aiki.worker([blocking_v1])
    handle = await blocking_v1.start(aiki.client, key)
    await asyncio.wait_for(ENTERED[key].wait(), timeout=WAIT.total_seconds())
    running = await get_run(aiki.http, handle.id)
    assert running["status"] == "running"

    paused = await handle.pause()
    assert paused.status == "paused"
    # The executor keeps the run until its step boundary: the task under way finishes and is recorded.
    assert paused.revision == running["revision"]
    RELEASE[key].set()

    async def stopped() -> list[dict[str, Any]]:
        while True:
            history = await get_history(aiki.http, handle.id)
            if any("step boundary" in h.get("reason", "") for h in history):
                return history
            await asyncio.sleep(0.02)

    history = await asyncio.wait_for(stopped(), timeout=WAIT.total_seconds())
    assert [(h["from_status"], h["to_status"]) for h in history][-2:] == [("running", "paused"), ("paused", "paused")]
    after = await get_run(aiki.http, handle.id)
    assert after["status"] == "paused"
    assert after["revision"] > running["revision"]
    assert LEDGER.count("life-after", key) == 0
    # From then on a write naming the old revision is refused, nothing changes.
    resp = await aiki.http.post(
        f"{API}/runs/{handle.id}/tasks",
        json={
            "revision": running["revision"],
            "address": task_address("life-after", key),
            "seq": 0,
            "name": "life-after",
            "status": "completed",
            "attempts": 1,
            "input": key,
            "output": None,
        },
    )
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "stale_revision"

    for action in ("pause", "wake", "requeue"):
        await _refused(aiki, handle.id, action, "paused")

    resumed = await handle.resume()
    assert resumed.status == "queued"
    assert await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds()) == "released"
    # The task that ran across the pause was recorded: the resumed execution replays it.
    assert LEDGER.count("life-blocking", key) == 1
    assert LEDGER.count("life-after", key) == 1
    moves = [(h["from_status"], h["to_status"]) for h in await get_history(aiki.http, handle.id)]
    assert ("running", "paused") in moves
    assert ("paused", "queued") in moves


async def _claim_and_pause(aiki: Any, key: str) -> tuple[Any, Any]:
    """A run claimed by a raw worker (which then does nothing, as if killed) and paused."""
    c = aiki.client
    worker_id = f"life-lost-{key}"
    spec = VersionSpec("life-blocking-wf", "1.0.0")
    await connect(c).register_worker(RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[spec]))
    handle = await blocking_v1.start(c, key)
    refs = [VersionRef("life-blocking-wf", "1.0.0")]
    [claimed] = (
        await connect(c).claim(ClaimRequest(worker_id=worker_id, versions=refs, max_runs=1, wait_ms=5000))
    ).activations
    await handle.pause()
    return handle, claimed


@pytest.fixture
async def aiki_no_recovery(db_url: str, transport: str) -> AsyncIterator[AikiHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await AikiHarness(kind, db_url, transport=transport, max_recoveries=0).start()
    try:
        yield harness
    finally:
        await harness.close()


async def test_a_pausing_run_past_its_recoveries_fails_when_its_executor_is_lost(aiki_no_recovery: Any) -> None:
    aiki = aiki_no_recovery
    handle, _ = await _claim_and_pause(aiki, new_key())
    svc = aiki.server.services
    await timers.fire_due(svc, now_ms() + 2 * svc.settings.lease_ttl_ms)
    run = await get_run(aiki.http, handle.id)
    assert (run["status"], run["error"]["cause"]) == ("failed", "recovery_exhausted")


async def test_a_pausing_run_whose_executor_is_lost_is_released_by_lease_recovery(aiki: Any) -> None:
    """Paused while running, its worker gone before the step boundary: the lease expires as a
    running run's would (recovery counted, revision bumped), the run stays paused and is released,
    so a resume queues it (not back to a dead executor)."""
    c, key = aiki.client, new_key()
    ENTERED[key], RELEASE[key] = asyncio.Event(), asyncio.Event()
    RELEASE[key].set()
    handle, claimed = await _claim_and_pause(aiki, key)
    worker_id = f"life-lost-{key}"
    held = [HeartbeatRun(claimed.run_id, claimed.revision)]

    # While the executor lives, its heartbeats keep the pausing run's lease, as a running run's.
    before = (await get_run(aiki.http, handle.id)).get("wake_at")
    assert before is not None
    beat = await connect(c).heartbeat(HeartbeatRequest(worker_id=worker_id, runs=held))
    assert (beat.stale, beat.paused) == ([], [handle.id])
    assert (await get_run(aiki.http, handle.id))["wake_at"] >= before

    # The worker is lost: once the lease is past, lease recovery releases the run.
    svc = aiki.server.services
    await timers.fire_due(svc, now_ms() + 2 * svc.settings.lease_ttl_ms)
    run = await get_run(aiki.http, handle.id)
    assert (run["status"], run["revision"], run["recoveries"]) == ("paused", claimed.revision + 1, 1)
    assert run.get("wake_at") is None
    last = (await get_history(aiki.http, handle.id))[-1]
    assert (last["from_status"], last["to_status"]) == ("paused", "paused")
    assert "expired while pausing" in last["reason"]
    beat = await connect(c).heartbeat(HeartbeatRequest(worker_id=worker_id, runs=held))
    assert (beat.stale, beat.paused) == ([handle.id], [])

    resumed = await handle.resume()
    assert resumed.status == "queued"
    await aiki.worker([blocking_v1])
    assert await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds()) == "released"


async def test_pause_and_resume_a_queued_run(aiki: Any) -> None:
    await aiki.worker([blocking_v1])  # registers the version; nobody serves the pool below
    handle = await blocking_v1.with_options(pool="nobody").start(aiki.client, new_key())
    for action in ("resume", "wake", "requeue"):
        await _refused(aiki, handle.id, action, "queued")
    assert (await handle.pause()).status == "paused"
    with pytest.raises(ActionNotAllowedError) as info:
        await handle.pause()
    assert isinstance(info.value, InvalidTransitionError)
    assert "it is paused" in str(info.value)
    view = await handle.resume()
    assert view.status == "queued"


async def test_resume_of_a_paused_delayed_start_keeps_its_start_time(aiki: Any) -> None:
    await aiki.worker([blocking_v1])
    far = await blocking_v1.with_options(delay=timedelta(hours=1), pool="nobody").start(aiki.client, new_key())
    scheduled = await get_run(aiki.http, far.id)
    assert scheduled["status"] == "scheduled"
    paused = await far.pause()
    assert paused.status == "paused"
    assert paused.wake_at is None
    resumed = await far.resume()
    assert resumed.status == "scheduled"
    assert resumed.wake_at == scheduled["wake_at"]

    near = await blocking_v1.with_options(delay=timedelta(milliseconds=200), pool="nobody").start(
        aiki.client, new_key()
    )
    await near.pause()
    await asyncio.sleep(0.4)  # its start time passes while it is paused: the timer leaves it alone
    assert (await get_run(aiki.http, near.id))["status"] == "paused"
    assert (await near.resume()).status == "queued"


async def test_wake_ends_a_sleep_early_and_only_applies_to_sleeping_runs(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([napping_v1])
    handle = await napping_v1.start(aiki.client, key)
    await handle.wait_for_status("sleeping", timeout=WAIT)
    for action in ("resume", "requeue"):
        await _refused(aiki, handle.id, action, "sleeping")

    woken = await handle.wake()
    assert woken.status == "queued"
    assert await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds()) == {"cancelled": True}
    assert LEDGER.count("life-after-nap", key) == 1
    for action in ("pause", "resume", "wake", "requeue", "cancel"):
        await _refused(aiki, handle.id, action, "completed")


async def test_actions_on_an_unknown_run_are_404(aiki: Any) -> None:
    for action in ("pause", "resume", "wake", "requeue"):
        resp = await aiki.http.post(f"{API}/runs/no-such-run/{action}")
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == "run_not_found"


# ---------------------------------------------------------------------------------------------
# Stalled runs: queued too long without a claim, then requeued
# ---------------------------------------------------------------------------------------------

STALL_AFTER = timedelta(milliseconds=300)


@pytest.fixture
async def aiki_stall(db_url: str, transport: str) -> AsyncIterator[AikiHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await AikiHarness(kind, db_url, transport=transport, stall_after=STALL_AFTER).start()
    try:
        yield harness
    finally:
        await harness.close()


quick_wf = workflow(name="life-quick-wf")


@quick_wf.v("1.0.0")
async def quick_v1(run: Run, key: str) -> str:
    LEDGER.hit("life-quick", key)
    return f"done {key}"


async def test_a_run_no_worker_claims_stalls_and_can_be_requeued(aiki_stall: Any) -> None:
    aiki = aiki_stall
    key = new_key()
    first = await aiki.worker([quick_v1])
    await first.stop(grace=timedelta(seconds=1))  # the version is known, but nobody serves it now

    handle = await quick_v1.start(aiki.client, key)
    await _refused(aiki, handle.id, "requeue", "queued")
    await handle.wait_for_status("stalled", timeout=WAIT)
    history = await get_history(aiki.http, handle.id)
    assert (history[-1]["from_status"], history[-1]["to_status"]) == ("queued", "stalled")
    assert "not claimed within" in history[-1]["reason"]
    for action in ("pause", "resume", "wake"):
        await _refused(aiki, handle.id, action, "stalled")

    await aiki.worker([quick_v1])
    await asyncio.sleep(0.2)
    assert (await get_run(aiki.http, handle.id))["status"] == "stalled"  # a stalled run is not claimed
    assert (await handle.requeue()).status == "queued"
    assert await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds()) == f"done {key}"
    assert LEDGER.count("life-quick", key) == 1


async def test_concurrent_stall_sweeps_move_each_run_once(aiki: Any) -> None:
    from aiki.platform.db.engine import Database
    from aiki.platform.domain.ids import now_ms
    from aiki.platform.services.context import Services
    from aiki.platform.services.timers import stall_sweep

    await aiki.worker([quick_v1])
    handles = [await quick_v1.with_options(pool="nobody").start(aiki.client, new_key()) for _ in range(30)]
    mine = aiki.server.services
    # A second replica: its own connection pool on PostgreSQL (SQLite serves one process).
    other_db = Database(aiki.url, migrate=False) if aiki.db == "postgres" else None
    other = Services(other_db, mine.settings) if other_db is not None else mine
    later = now_ms() + mine.settings.stall_after_ms + 1000
    try:
        moved = await asyncio.gather(
            stall_sweep(mine, later, limit=7), stall_sweep(other, later, limit=7), stall_sweep(mine, later)
        )
        moved_again = await stall_sweep(other, later)
    finally:
        if other_db is not None:
            await other_db.dispose()
    assert sum(moved) + moved_again == 30
    for handle in handles:
        stalls = [h for h in await get_history(aiki.http, handle.id) if h["to_status"] == "stalled"]
        assert len(stalls) == 1
        assert (await get_run(aiki.http, handle.id))["status"] == "stalled"
