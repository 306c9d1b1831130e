"""Worker pools: a run started in a pool is claimed only by workers serving that pool."""

from __future__ import annotations

import asyncio
from typing import Any

from aiki import Run, task, workflow

from .helpers import API, LEDGER, WAIT, get_history, new_key
from .query_helpers import assert_bad_param, register, start


async def _claim(aiki: Any, pools: list[str], worker_id: str = "probe") -> list[str]:
    resp = await aiki.http.post(
        f"{API}/workers/claim",
        json={"worker_id": worker_id, "versions": [["pool-proto", "1"]], "max_runs": 10, "wait_ms": 0, "pools": pools},
    )
    assert resp.status_code == 200, resp.text
    return [a["run_id"] for a in resp.json()["activations"]]


async def test_claim_takes_only_runs_of_the_pools_the_worker_serves(aiki: Any) -> None:
    await register(aiki.http, ("pool-proto", "1"))
    plain = await start(aiki.http, "pool-proto", "1", 1)
    named_default = await start(aiki.http, "pool-proto", "1", 2, pool="default")
    gpu = await start(aiki.http, "pool-proto", "1", 3, pool="gpu")
    tpu = await start(aiki.http, "pool-proto", "1", 4, pool="tpu")
    views = {r: (await aiki.http.get(f"{API}/runs/{r}")).json() for r in (plain, named_default, gpu)}
    # "default" is the default pool's name, stored like no pool at all.
    assert "pool" not in views[plain]
    assert "pool" not in views[named_default]
    assert views[gpu]["pool"] == "gpu"

    # A worker naming no pools serves the default pool only.
    assert sorted(await _claim(aiki, [])) == sorted([plain, named_default])
    assert await _claim(aiki, []) == []
    # A worker naming pools serves only those; the gpu run was left for it.
    assert await _claim(aiki, ["cpu"]) == []
    assert await _claim(aiki, ["gpu"]) == [gpu]
    # Naming "default" alongside another pool serves both.
    another_plain = await start(aiki.http, "pool-proto", "1", 5)
    assert sorted(await _claim(aiki, ["tpu", "default"])) == sorted([tpu, another_plain])


async def test_pool_names_are_checked(aiki: Any) -> None:
    await register(aiki.http, ("pool-proto", "1"))
    for bad in ("", "   ", "x" * 101):
        resp = await aiki.http.post(f"{API}/runs", json={"workflow": "pool-proto", "version": "1", "pool": bad})
        assert_bad_param(resp, "pool")
        resp = await aiki.http.post(
            f"{API}/workers/claim", json={"worker_id": "w", "versions": [["pool-proto", "1"]], "pools": [bad]}
        )
        assert_bad_param(resp, "pools")


@task(name="pool-step")
async def pool_step(key: str) -> str:
    LEDGER.hit("pool-step", key)
    return key


pool_wf = workflow(name="pool-sdk")


@pool_wf.v("1.0.0")
async def pool_v1(run: Run, key: str) -> str:
    return await pool_step.start(run, key)


async def _claimed_by(aiki: Any, run_id: str) -> list[str]:
    return [h["reason"] for h in await get_history(aiki.http, run_id) if h["to_status"] == "running"]


async def test_sdk_workers_serve_their_pools(aiki: Any) -> None:
    plain_worker = await aiki.worker([pool_v1], worker_id=f"plain-{new_key()}")
    gpu_handles = [await pool_v1.with_options(pool="gpu").start(aiki.client, new_key()) for _ in range(2)]
    plain_handles = [await pool_v1.start(aiki.client, new_key()) for _ in range(2)]

    # The default-pool worker runs the default-pool runs; it has looked at the queue since the gpu
    # runs were queued, and left them there.
    for handle in plain_handles:
        await handle.wait_for_status("completed", timeout=WAIT)
        assert await _claimed_by(aiki, handle.id) == [f"claimed by {plain_worker.worker_id}"]
    for handle in gpu_handles:
        assert await handle.status() == "queued"

    gpu_worker = await aiki.worker([pool_v1], pools=["gpu"], worker_id=f"gpu-{new_key()}")
    for handle in gpu_handles:
        await handle.wait_for_status("completed", timeout=WAIT)
        assert await _claimed_by(aiki, handle.id) == [f"claimed by {gpu_worker.worker_id}"]

    # A default-pool run started now goes to the plain worker, never to the gpu one.
    late = await pool_v1.start(aiki.client, new_key())
    await late.wait_for_status("completed", timeout=WAIT)
    assert await _claimed_by(aiki, late.id) == [f"claimed by {plain_worker.worker_id}"]

    workers = {w["id"]: w for w in (await aiki.http.get(f"{API}/workers")).json()["items"]}
    assert workers[plain_worker.worker_id]["pools"] == ["default"]
    assert workers[gpu_worker.worker_id]["pools"] == ["gpu"]
    await asyncio.gather(plain_worker.stop(), gpu_worker.stop())
