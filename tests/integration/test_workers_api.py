"""``GET /api/v1/workers``: connected workers, what they serve, their load and liveness."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiki import Run, task, workflow
from tests.conftest import AikiHarness

from .helpers import API, LEDGER, WAIT, new_key
from .query_helpers import register

ENTERED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}


@task(name="workers-hold")
async def hold(key: str) -> str:
    LEDGER.hit("workers-hold", key)
    ENTERED[key].set()
    await RELEASE[key].wait()
    return key


hold_wf = workflow(name="workers-hold-wf")


@hold_wf.v("1.0.0")
async def hold_v1(run: Run, key: str) -> str:
    return await hold.start(run, key)


@hold_wf.v("2.0.0")
async def hold_v2(run: Run, key: str) -> str:
    return await hold.start(run, key)


async def _workers(aiki: Any) -> dict[str, dict[str, Any]]:
    resp = await aiki.http.get(f"{API}/workers")
    assert resp.status_code == 200, resp.text
    return {w["id"]: w for w in resp.json()["items"]}


async def test_workers_list_shows_a_connected_worker_with_its_versions_and_in_flight_runs(aiki: Any) -> None:
    before = int(time.time() * 1000)
    handle = await aiki.worker([hold_v1, hold_v2], concurrency=5, pools=["gpu", "default"])
    # Serves a version no run is started of: it stays idle.
    idle = await aiki.worker([hold_v2], worker_id=f"idle-{new_key()}")
    keys = [new_key() for _ in range(2)]
    for key in keys:
        ENTERED[key], RELEASE[key] = asyncio.Event(), asyncio.Event()
    runs = [
        await hold_v1.start(aiki.client, keys[0]),
        await hold_v2.with_options(pool="gpu").start(aiki.client, keys[1]),
    ]
    for key in keys:
        await asyncio.wait_for(ENTERED[key].wait(), timeout=WAIT.total_seconds())

    workers = await _workers(aiki)
    main = workers[handle.worker_id]
    assert main["host"] == socket.gethostname()
    assert main["pid"] == os.getpid()
    assert sorted((v["workflow"], v["version"]) for v in main["versions"]) == [
        ("workers-hold-wf", "1.0.0"),
        ("workers-hold-wf", "2.0.0"),
    ]
    assert sorted(main["pools"]) == ["default", "gpu"]
    assert main["concurrency"] == 5
    assert main["status"] == "active"
    assert main["last_heartbeat_at"] >= main["started_at"] >= before
    other = workers[idle.worker_id]
    assert other["versions"] == [{"workflow": "workers-hold-wf", "version": "2.0.0"}]
    assert other["pools"] == ["default"]
    # In flight: the runs leased to the worker right now.
    assert main["in_flight"] == 2 == handle.in_flight
    assert other["in_flight"] == 0

    for key in keys:
        RELEASE[key].set()
    for run in runs:
        await run.wait_for_status("completed", timeout=WAIT)
    workers = await _workers(aiki)
    assert workers[handle.worker_id]["in_flight"] == 0
    assert workers[idle.worker_id]["in_flight"] == 0


async def test_a_worker_that_stopped_heartbeating_is_listed_as_stale(
    db_url: str, transport: str, tmp_path: Path
) -> None:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    aiki = await AikiHarness(kind, db_url, transport=transport, lease_ttl=timedelta(milliseconds=300)).start()
    try:
        # A worker that registered and then vanished (it never heartbeats)...
        await register(aiki.http, ("workers-hold-wf", "1.0.0"), worker_id="ghost")
        # ...and a live one, heartbeating every 100 ms.
        live = await aiki.worker([hold_v1])
        deadline = time.monotonic() + WAIT.total_seconds()
        while True:
            workers = await _workers(aiki)
            if workers["ghost"]["status"] == "stale" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert workers["ghost"]["status"] == "stale"
        assert workers["ghost"]["pools"] == ["default"]
        assert "pid" not in workers["ghost"]
        # The live worker heartbeated within the last few leases.
        assert workers[live.worker_id]["status"] == "active"
        assert workers[live.worker_id]["last_heartbeat_at"] > workers["ghost"]["last_heartbeat_at"]
    finally:
        await aiki.close()


async def test_a_worker_registering_again_under_its_id_is_updated_in_place(aiki: Any) -> None:
    for pid, pools in ((111, []), (222, ["gpu"])):
        resp = await aiki.http.post(
            f"{API}/workers/register",
            json={
                "worker_id": "stable",
                "host": "box",
                "pid": pid,
                "pools": pools,
                "versions": [{"workflow": "workers-hold-wf", "version": "1.0.0"}],
            },
        )
        assert resp.status_code == 200, resp.text
        workers = await _workers(aiki)
        assert list(workers) == ["stable"]
        assert workers["stable"]["pid"] == pid
        assert workers["stable"]["pools"] == (pools or ["default"])
        assert workers["stable"]["status"] == "active"
