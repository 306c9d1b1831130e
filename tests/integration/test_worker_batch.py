"""``POST /workers/commands``: a worker over HTTP sends its writes in batches; each command answers
for itself, exactly as its own route would (fencing, size limit, tenancy). Both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiki import Run, client, task, worker, workflow
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, RegisterWorkerRequest, VersionRef, VersionSpec
from tests.iam_support import IamHarness

from .helpers import API, LEDGER, WAIT, CountingASGI, new_key


@task(name="batch-step")
async def batch_step(value: list[Any]) -> int:
    LEDGER.hit("batch-step", value[0])
    n: int = value[1]
    return n + 1


batch_wf = workflow(name="batch-three")


@batch_wf.v("1.0.0")
async def batch_v1(run: Run, value: list[Any]) -> int:
    key, n = value
    n = await batch_step.start(run, [key, n])
    n = await batch_step.start(run, [key, n])
    return await batch_step.start(run, [key, n])


def _record(revision: int, *, address: str = "batch-step:x", output: Any = 1) -> dict[str, Any]:
    return {
        "revision": revision,
        "address": address,
        "seq": 0,
        "name": "batch-step",
        "status": "completed",
        "attempts": 1,
        "output": output,
    }


async def _claimed(aiki: Any, count: int) -> list[Any]:
    """Start ``count`` runs and claim them with a registered (but idle) worker id."""
    worker_id = f"batch-claimer-{new_key()}"
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[VersionSpec("batch-three", "1.0.0")])
    )
    handles = [await batch_v1.start(aiki.client, [new_key(), 0]) for _ in range(count)]
    claim = await connect(aiki.client).claim(
        ClaimRequest(worker_id=worker_id, versions=[VersionRef("batch-three", "1.0.0")], max_runs=count, wait_ms=5000)
    )
    assert sorted(a.run_id for a in claim.activations) == sorted(h.id for h in handles)
    return claim.activations


async def test_a_busy_http_worker_sends_its_writes_in_batches(aiki: Any) -> None:
    counting = CountingASGI(aiki.handler)
    http = client(handler=counting, local_port=False)
    registrar = await worker(workflows=[batch_v1], worker_id=f"batch-registrar-{new_key()}").spawn(aiki.client)
    await registrar.stop()
    # Runs waiting before the worker comes: its claims take 20 at a time, which then run side by side.
    keys = [new_key() for _ in range(40)]
    handles = [await batch_v1.start(aiki.client, [key, 0]) for key in keys]
    handle_w = await worker(workflows=[batch_v1], concurrency=20, worker_id=f"batcher-{new_key()}").spawn(http)
    try:
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), WAIT.total_seconds())
    finally:
        await handle_w.stop()
        await http.close()
    assert results == [3] * 40
    assert [LEDGER.count("batch-step", key) for key in keys] == [3] * 40  # every task ran exactly once
    paths = [path for method, path in counting.requests if method == "POST"]
    assert not [p for p in paths if p.endswith(("/tasks", "/transition", "/children"))], (
        "writes went around the commands route"
    )
    batches = paths.count(f"{API}/workers/commands")
    writes = 40 * 4  # three task records and one completion per run
    assert 0 < batches <= writes // 2, f"{batches} batch requests carried {writes} writes"


async def test_each_operation_answers_for_itself(aiki: Any) -> None:
    fresh, stale = await _claimed(aiki, 2)
    await aiki.http.post(f"{API}/runs/{stale.run_id}/cancel", json={})  # fences the claim's revision
    too_big = _record(fresh.revision, address="b:1", output="x" * (70 * 1024))  # the harness allows 64 KiB
    body = {
        "commands": [
            {"kind": "record_task", "run_id": fresh.run_id, **_record(fresh.revision)},
            {"kind": "record_task", "run_id": stale.run_id, **_record(stale.revision)},
            {"kind": "record_task", "run_id": fresh.run_id, **_record(fresh.revision, address="b:1", output=too_big)},
            {"kind": "complete", "run_id": "no-such-run", "revision": 1},
        ]
    }
    resp = await aiki.http.post(f"{API}/workers/commands", json=body)
    assert resp.status_code == 200, resp.text
    ok, fenced, oversized, missing = resp.json()["results"]
    assert ok == {"record": {"recorded": True}}
    assert (fenced["problem"]["status"], fenced["problem"]["code"]) == (409, "stale_revision")
    assert fenced["problem"]["instance"] == f"{API}/runs/{stale.run_id}/tasks"
    assert (oversized["problem"]["status"], oversized["problem"]["code"]) == (413, "payload_too_large")
    assert (missing["problem"]["status"], missing["problem"]["code"]) == (404, "run_not_found")
    # Only the valid operation wrote anything.
    fresh_tasks = (await aiki.http.get(f"{API}/runs/{fresh.run_id}/detail")).json()["tasks"]
    assert [(t["address"], t["status"]) for t in fresh_tasks] == [("batch-step:x", "completed")]
    assert (await aiki.http.get(f"{API}/runs/{stale.run_id}/detail")).json()["tasks"] == []


async def test_a_stale_write_in_a_batch_is_the_same_error_as_alone(aiki: Any) -> None:
    [activation] = await _claimed(aiki, 1)
    await aiki.http.post(f"{API}/runs/{activation.run_id}/cancel", json={})
    alone = await aiki.http.post(f"{API}/runs/{activation.run_id}/tasks", json=_record(activation.revision))
    batched = await aiki.http.post(
        f"{API}/workers/commands",
        json={"commands": [{"kind": "record_task", "run_id": activation.run_id, **_record(activation.revision)}]},
    )
    assert alone.status_code == 409
    assert batched.json()["results"][0]["problem"] == alone.json()


@pytest.mark.parametrize("count", [0, 257])
async def test_a_batch_holds_one_to_256_operations(aiki: Any, count: int) -> None:
    command = {"kind": "complete", "run_id": "r", "revision": 1}
    resp = await aiki.http.post(f"{API}/workers/commands", json={"commands": [command] * count})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "$.commands"


async def test_an_unknown_operation_is_refused_naming_it(aiki: Any) -> None:
    resp = await aiki.http.post(
        f"{API}/workers/commands", json={"commands": [{"kind": "delete_everything", "run_id": "r", "revision": 1}]}
    )
    assert resp.status_code == 422, resp.text
    assert "delete_everything" in resp.json()["detail"]


async def test_a_key_of_another_namespace_cannot_write_to_a_run(iam_aiki: IamHarness) -> None:
    h = iam_aiki
    alice = await h.signup(f"alice-{new_key()}@example.com")
    bob = await h.signup(f"bob-{new_key()}@example.com")
    alice_key = (await h.create_key(alice, "worker"))["key"]
    bob_key = (await h.create_key(bob, "worker"))["key"]
    alice_client = client(handler=h.handler, api_key=alice_key)
    try:
        await connect(alice_client).register_worker(
            RegisterWorkerRequest(worker_id="alice-w", host="t", versions=[VersionSpec("batch-three", "1.0.0")])
        )
        handle = await batch_v1.start(alice_client, [new_key(), 0])
        claim = await connect(alice_client).claim(
            ClaimRequest(worker_id="alice-w", versions=[VersionRef("batch-three", "1.0.0")], wait_ms=5000)
        )
        [activation] = claim.activations
        resp = await h.key_http(bob_key).post(
            f"{API}/workers/commands",
            json={"commands": [{"kind": "record_task", "run_id": handle.id, **_record(activation.revision)}]},
        )
        assert resp.status_code == 200, resp.text
        [outcome] = resp.json()["results"]
        assert (outcome["problem"]["status"], outcome["problem"]["code"]) == (404, "run_not_found")
        detail = await h.key_http(alice_key).get(f"{API}/runs/{handle.id}/detail")
        assert detail.json()["tasks"] == []
    finally:
        await alice_client.close()
