"""A worker that stops hands its runs back at once; lease TTL and heartbeat interval are settings.

A run whose task blocks is held by worker A. ``A.stop()`` cancels the execution and releases the
run: worker B claims it at once, though the lease TTL (two minutes) is far longer than the test
may take, so lease expiry cannot be what frees it. Both databases; the SDK's in-process port and
HTTP on a loopback socket (the ``transport`` fixture).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from aiki import Run, server, task, worker, workflow
from aiki.platform.db.engine import Database
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import HeartbeatRun, RegisterWorkerRequest, ReleaseRequest, VersionSpec
from tests.conftest import AikiHarness

from .helpers import API, LEDGER, WAIT, new_key

LONG_LEASE = timedelta(seconds=120)
_UNBLOCK: dict[str, asyncio.Event] = {}
_STARTED: dict[str, asyncio.Event] = {}


@task(name="release-blocking-step")
async def blocking_step(key: str) -> str:
    # The first execution blocks (until cancelled); any later one returns at once.
    first = LEDGER.hit("release-blocking-step", key) == 1
    _STARTED.setdefault(key, asyncio.Event()).set()
    if first:
        await _UNBLOCK.setdefault(key, asyncio.Event()).wait()
    return key


release_wf = workflow(name="release-on-stop")


@release_wf.v("1.0.0")
async def release_v1(run: Run, key: str) -> str:
    return await blocking_step.start(run, key)


@pytest.fixture
async def long_lease(make_aiki: Any) -> AikiHarness:
    harness: AikiHarness = await make_aiki(lease_ttl=LONG_LEASE)
    return harness


async def _wait_for_hits(key: str, n: int) -> None:
    assert n == 1
    async with asyncio.timeout(WAIT.total_seconds()):
        await _STARTED.setdefault(key, asyncio.Event()).wait()


async def _history(aiki: Any, run_id: str) -> list[tuple[str | None, str, str | None]]:
    entries = (await aiki.http.get(f"{API}/runs/{run_id}/history")).json()
    return [(e.get("from_status"), e["to_status"], e.get("reason")) for e in entries]


async def test_stop_hands_the_run_back_and_another_worker_claims_it_at_once(long_lease: AikiHarness) -> None:
    aiki = long_lease
    a = await aiki.worker([release_v1], concurrency=1)
    key = new_key()
    handle = await release_v1.start(aiki.client, key)
    await _wait_for_hits(key, 1)  # A executes the task, which blocks
    held = await handle.describe()
    assert held.status == "running"

    b = await aiki.worker([release_v1], concurrency=1)
    await a.stop(grace=timedelta(0))

    # B gets the run long before the two-minute lease could expire, and completes it.
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key
    view = await handle.describe()
    assert view.recoveries == 0
    history = await _history(aiki, handle.id)
    assert ("running", "queued", f"released by {a.worker_id} (worker stopping)") in history
    assert history[-2:] == [("queued", "running", f"claimed by {b.worker_id}"), ("running", "completed", None)]
    assert LEDGER.count("release-blocking-step", key) == 2


async def test_stop_after_its_grace_hands_back_what_is_still_running(long_lease: AikiHarness) -> None:
    aiki = long_lease
    a = await aiki.worker([release_v1], concurrency=1)
    key = new_key()
    handle = await release_v1.start(aiki.client, key)
    await _wait_for_hits(key, 1)
    await aiki.worker([release_v1], concurrency=1)
    await a.stop(grace=timedelta(milliseconds=200))
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key
    assert (await handle.describe()).recoveries == 0


async def test_stop_hands_back_a_pausing_run_which_stays_paused(long_lease: AikiHarness) -> None:
    """Paused while its task runs, then its worker stops: the run is released at once (no lease to
    wait out, no recovery), still paused, and a resume queues it."""
    aiki = long_lease
    a = await aiki.worker([release_v1], concurrency=1)
    key = new_key()
    handle = await release_v1.start(aiki.client, key)
    await _wait_for_hits(key, 1)
    running = await handle.describe()
    await handle.pause()
    await a.stop(grace=timedelta(0))

    view = await handle.describe()
    assert (view.status, view.revision, view.recoveries) == ("paused", running.revision + 1, 0)
    history = await _history(aiki, handle.id)
    assert history[-1] == ("paused", "paused", f"released by {a.worker_id} (worker stopping)")
    assert (await handle.resume()).status == "queued"
    await aiki.worker([release_v1], concurrency=1)
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key


async def test_release_leaves_runs_that_moved_on(long_lease: AikiHarness) -> None:
    aiki = long_lease
    a = await aiki.worker([release_v1], concurrency=1)
    key = new_key()
    handle = await release_v1.start(aiki.client, key)
    await _wait_for_hits(key, 1)
    view = await handle.describe()
    # Another worker's release, a stale revision and an unknown run are all left alone.
    for worker_id, run_id, revision in (
        ("someone-else", handle.id, view.revision),
        (a.worker_id, handle.id, view.revision - 1),
        (a.worker_id, "no-such-run", 1),
    ):
        answer = await connect(aiki.client).release(
            ReleaseRequest(worker_id=worker_id, runs=[HeartbeatRun(run_id, revision)])
        )
        assert answer.released == []
    assert (await handle.describe()).status == "running"
    await handle.cancel()
    _UNBLOCK.setdefault(key, asyncio.Event()).set()


async def test_a_worker_may_beat_more_often_than_the_server_asks(aiki: AikiHarness) -> None:
    # The harness's server: 5 s lease, so a beat every 1.666 s; the worker asks for 0.2 s.
    fast = await aiki.worker([release_v1], heartbeat_interval=timedelta(milliseconds=200))
    assert fast._heartbeat_interval == pytest.approx(0.2)
    # Asking for a slower beat than the server's gets the server's.
    slow = await aiki.worker([release_v1], heartbeat_interval=timedelta(seconds=60))
    assert slow._heartbeat_interval == pytest.approx(5 / 3, abs=0.01)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_ttl": timedelta(milliseconds=50)}, "lease_ttl must be at least 0.2 s"),
        ({"lease_ttl": timedelta(seconds=6), "heartbeat_interval": timedelta(seconds=4)}, "at most half of lease_ttl"),
        ({"heartbeat_interval": timedelta(0)}, "heartbeat_interval must be positive"),
    ],
)
def test_lease_settings_are_checked_naming_them(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server(db=Database("sqlite+aiosqlite:///:memory:", migrate=False), **options)


def test_a_worker_heartbeat_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="heartbeat_interval must be positive"):
        worker([release_v1], heartbeat_interval=timedelta(0))


async def test_the_server_settings_reach_the_worker(make_aiki: Any) -> None:
    harness = await make_aiki(lease_ttl=timedelta(seconds=3), heartbeat_interval=timedelta(milliseconds=700))
    answer = await connect(harness.client).register_worker(
        RegisterWorkerRequest(worker_id=new_key("w"), host="t", versions=[VersionSpec("release-on-stop", "1.0.0")])
    )
    assert (answer.lease_ttl_ms, answer.heartbeat_interval_ms) == (3000, 700)
