"""A run started while a claimer of the same server waits for such a run is handed to it: inserted
already claimed, with the history a claim writes, and never left leased to a claimer that stopped
waiting. Both databases."""

from __future__ import annotations

import asyncio
from typing import Any

from aiki import Run, task, workflow
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, ClaimResponse, RegisterWorkerRequest, VersionRef, VersionSpec

from .helpers import API, LEDGER, WAIT, new_key


@task(name="handoff-step")
async def handoff_step(key: str) -> str:
    LEDGER.hit("handoff-step", key)
    return key


handoff_wf = workflow(name="handoff-one")


@handoff_wf.v("1.0.0")
async def handoff_v1(run: Run, key: str) -> str:
    return await handoff_step.start(run, key)


async def _registered(aiki: Any) -> str:
    worker_id = f"handoff-claimer-{new_key()}"
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[VersionSpec("handoff-one", "1.0.0")])
    )
    return worker_id


async def _parked_claim(aiki: Any, worker_id: str, *, pools: list[str] | None = None) -> asyncio.Task[ClaimResponse]:
    """A claim long-poll that is parked on the server (waiting, nothing to claim yet)."""
    claims = aiki.server.services.claims
    before = claims.parked(DEFAULT_NAMESPACE_ID)
    request = ClaimRequest(
        worker_id=worker_id,
        versions=[VersionRef("handoff-one", "1.0.0")],
        max_runs=5,
        wait_ms=int(WAIT.total_seconds() * 1000),
        pools=pools or [],
    )
    claim = asyncio.create_task(connect(aiki.client).claim(request))
    async with asyncio.timeout(WAIT.total_seconds()):
        while claims.parked(DEFAULT_NAMESPACE_ID) == before:
            assert not claim.done(), claim.result()
            await asyncio.sleep(0.001)
    return claim


async def _history(aiki: Any, run_id: str) -> list[tuple[str | None, str, str | None]]:
    entries = (await aiki.http.get(f"{API}/runs/{run_id}/history")).json()
    return [(e.get("from_status"), e["to_status"], e.get("reason")) for e in entries]


async def test_a_run_started_while_a_claimer_waits_is_handed_to_it(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    claim = await _parked_claim(aiki, worker_id)
    handle = await handoff_v1.start(aiki.client, new_key())
    [activation] = (await asyncio.wait_for(claim, WAIT.total_seconds())).activations
    assert (activation.run_id, activation.revision, activation.attempt) == (handle.id, 1, 1)
    assert (activation.workflow, activation.version) == ("handoff-one", "1.0.0")
    assert activation.tasks == []
    assert activation.events == []
    run = (await aiki.http.get(f"{API}/runs/{handle.id}")).json()
    assert (run["status"], run["revision"]) == ("running", 1)
    # The same history as a claim of a queued run writes.
    assert await _history(aiki, handle.id) == [
        (None, "queued", None),
        ("queued", "running", f"claimed by {worker_id}"),
    ]


async def test_a_handed_run_is_executed_like_a_claimed_one(aiki: Any) -> None:
    await aiki.worker([handoff_v1])
    key = new_key()
    handle = await handoff_v1.start(aiki.client, key)
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == key
    assert LEDGER.count("handoff-step", key) == 1


async def test_a_claimer_of_another_pool_is_not_handed_the_run(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    claim = await _parked_claim(aiki, worker_id, pools=["gpu"])
    handle = await handoff_v1.start(aiki.client, new_key())
    run = (await aiki.http.get(f"{API}/runs/{handle.id}")).json()
    assert run["status"] == "queued"
    assert not claim.done()
    claim.cancel()


async def test_a_run_with_a_reference_id_is_queued_as_usual(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    claim = await _parked_claim(aiki, worker_id)
    handle = await handoff_v1.with_options(reference_id=new_key()).start(aiki.client, new_key())
    # The claim still takes it, through the queue.
    [activation] = (await asyncio.wait_for(claim, WAIT.total_seconds())).activations
    assert activation.run_id == handle.id
    assert [h[1] for h in await _history(aiki, handle.id)] == ["queued", "running"]


async def test_a_run_handed_to_a_claimer_that_stopped_waiting_goes_back_to_the_queue(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    claim = await _parked_claim(aiki, worker_id)
    claims = aiki.server.services.claims
    take = claims.take

    def take_then_stop(*args: Any) -> Any:
        offer = take(*args)
        claim.cancel()  # the claimer's request ends while the run is being inserted
        return offer

    claims.take = take_then_stop
    key = new_key()
    try:
        handle = await handoff_v1.start(aiki.client, key)
    finally:
        claims.take = take
    assert claim.cancelled() or claim.done()
    # In process the claim's end reaches the handoff at once; over HTTP the server learns of it
    # when the connection closes, so wait for the run to be back in the queue.
    run = await aiki.client.get_run(handle.id, wait_for=("queued",), timeout_ms=int(WAIT.total_seconds() * 1000))
    assert (run.status, run.revision) == ("queued", 2)
    assert await _history(aiki, handle.id) == [
        (None, "queued", None),
        ("queued", "running", f"claimed by {worker_id}"),
        ("running", "queued", f"handed to {worker_id}, which had stopped waiting"),
    ]
    # A worker claims it from the queue and runs it to the end, once.
    await aiki.worker([handoff_v1])
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == key
    assert LEDGER.count("handoff-step", key) == 1


async def test_a_claim_right_after_a_handoff_still_finds_a_run_queued_meanwhile(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    claim = await _parked_claim(aiki, worker_id)
    first = await handoff_v1.start(aiki.client, new_key())
    [handed] = (await asyncio.wait_for(claim, WAIT.total_seconds())).activations
    assert handed.run_id == first.id
    # No claim of this worker waits now: the next run goes to the queue ...
    second = await handoff_v1.start(aiki.client, new_key())
    assert (await aiki.http.get(f"{API}/runs/{second.id}")).json()["status"] == "queued"
    # ... and the worker's next claim, even one that does not wait, finds it there.
    request = ClaimRequest(worker_id=worker_id, versions=[VersionRef("handoff-one", "1.0.0")], max_runs=5, wait_ms=0)
    assert [a.run_id for a in (await connect(aiki.client).claim(request)).activations] == [second.id]


async def test_a_wait_begun_right_after_the_start_wakes_when_the_run_is_claimed(aiki: Any) -> None:
    worker_id = await _registered(aiki)
    handle = await handoff_v1.start(aiki.client, new_key())  # no claimer waits: queued
    hub = aiki.server.services.hub
    waiting = asyncio.create_task(handle.wait_for_status("running", timeout=WAIT))
    async with asyncio.timeout(WAIT.total_seconds()):
        while hub.waiting(f"run:{handle.id}") == 0:
            assert not waiting.done(), waiting.result()
            await asyncio.sleep(0.001)
    request = ClaimRequest(worker_id=worker_id, versions=[VersionRef("handoff-one", "1.0.0")], max_runs=1, wait_ms=0)
    [claimed] = (await connect(aiki.client).claim(request)).activations
    # Woken by the claim itself, long before the waiters' periodic look (10 s).
    view = await asyncio.wait_for(waiting, 5)
    assert (view.id, view.status, claimed.run_id) == (handle.id, "running", handle.id)
