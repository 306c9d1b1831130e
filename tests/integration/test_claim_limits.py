"""A claim leases at most ``max_runs`` runs, and a worker never runs more than its concurrency.

Both databases, in process (the local port) and over HTTP (the ``transport`` fixture: uvicorn on a
loopback socket and ``client(url=...)``). On PostgreSQL a claim once leased every queued run whatever its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import defaultdict
from typing import Any

import pytest

from aiki import Client, Run, task, worker, workflow
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, RegisterWorkerRequest, VersionRef, VersionSpec

from .helpers import API, WAIT, new_key

QUEUED = 20

# Which worker runs a task: set around a worker's spawn, inherited by every task it creates.
WORKER_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("claim_limit_worker", default="?")
IN_FLIGHT: dict[str, int] = defaultdict(int)
PEAK: dict[str, int] = defaultdict(int)


@task(name="claim-limit-busy")
async def busy(key: str) -> str:
    tag = f"{key}/{WORKER_TAG.get()}"
    IN_FLIGHT[tag] += 1
    PEAK[tag] = max(PEAK[tag], IN_FLIGHT[tag])
    try:
        # Work that takes a little while, so that runs a worker holds at once overlap here.
        await asyncio.sleep(0.02)
    finally:
        IN_FLIGHT[tag] -= 1
    return key


limited_wf = workflow(name="claim-limit")


@limited_wf.v("1.0.0")
async def limited_v1(run: Run, key: str) -> str:
    return await busy.start(run, key)


@pytest.fixture
def sdk(aiki: Any) -> Client:
    """The harness's client: its local port, or HTTP on a loopback socket (the ``transport``)."""
    client: Client = aiki.client
    return client


async def _register(sdk: Client) -> str:
    """Register the version under a worker that never claims; its id."""
    worker_id = f"claim-limit-{new_key()}"
    await connect(sdk).register_worker(
        RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[VersionSpec("claim-limit", "1.0.0")])
    )
    return worker_id


async def _queue(sdk: Client, key: str, n: int = QUEUED) -> list[Any]:
    return [await limited_v1.start(sdk, key) for _ in range(n)]


async def _statuses(aiki: Any, handles: list[Any]) -> list[str]:
    return [(await aiki.http.get(f"{API}/runs/{h.id}")).json()["status"] for h in handles]


@pytest.mark.parametrize("max_runs", [1, 3])
async def test_a_claim_leases_no_more_than_its_limit(aiki: Any, sdk: Client, max_runs: int) -> None:
    worker_id = await _register(sdk)
    handles = await _queue(sdk, new_key())
    request = ClaimRequest(worker_id=worker_id, versions=[VersionRef("claim-limit", "1.0.0")], max_runs=max_runs)
    response = await connect(sdk).claim(request)
    assert len(response.activations) == max_runs
    statuses = await _statuses(aiki, handles)
    assert statuses.count("running") == max_runs
    assert statuses.count("queued") == QUEUED - max_runs
    # Oldest first.
    assert [a.run_id for a in response.activations] == [h.id for h in handles[:max_runs]]


async def _spawn(sdk: Client, tag: str, concurrency: int) -> Any:
    token = WORKER_TAG.set(tag)
    try:
        return await worker(workflows=[limited_v1], concurrency=concurrency).spawn(sdk)
    finally:
        WORKER_TAG.reset(token)


async def _run_all(sdk: Client, key: str, workers: list[tuple[str, int]]) -> dict[str, int]:
    """Queue a burst, then let ``workers`` (tag, concurrency) run it; the peak of each worker."""
    await _register(sdk)
    handles = await _queue(sdk, key)
    spawned = [await _spawn(sdk, tag, concurrency) for tag, concurrency in workers]
    try:
        async with asyncio.timeout(WAIT.total_seconds()):
            results = [await h.result() for h in handles]
    finally:
        for handle in spawned:
            with contextlib.suppress(Exception):
                await handle.stop()
    assert results == [key] * QUEUED
    return {tag: PEAK[f"{key}/{tag}"] for tag, _ in workers}


async def test_a_worker_of_concurrency_one_runs_one_run_at_a_time(sdk: Client) -> None:
    peaks = await _run_all(sdk, new_key(), [("only", 1)])
    assert peaks == {"only": 1}


async def test_two_workers_never_exceed_their_concurrency(sdk: Client) -> None:
    peaks = await _run_all(sdk, new_key(), [("a", 4), ("b", 4)])
    assert max(peaks.values()) <= 4, peaks
