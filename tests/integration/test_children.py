"""Child workflows (SPEC §2 "Child workflows", §3 "Cancel"): fan-out, waking on any terminal
status, wait timeouts, and the server-side cancel cascade."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiki import ChildResult, Run, task, workflow

from .helpers import API, LEDGER, WAIT, get_history, get_run, new_key

FAN_OUT = 10
ARRIVED: dict[str, int] = {}
ALL_ARRIVED: dict[str, asyncio.Event] = {}
# Set by the test once the parent is seen suspended on a child: no child ends before that, so the
# parent's wake-up by a child's ending is exercised on every run, whatever the machine's load.
PARENT_WAITING: dict[str, asyncio.Event] = {}


@task(name="orch-square")
async def square(item: dict[str, Any]) -> int:
    key = item["key"]
    LEDGER.hit("orch-square", key, item["n"])
    # Every child waits here until all of them arrived: only children running in parallel get through.
    ARRIVED[key] = ARRIVED.get(key, 0) + 1
    if ARRIVED[key] == FAN_OUT:
        ALL_ARRIVED[key].set()
    await asyncio.wait_for(ALL_ARRIVED[key].wait(), timeout=WAIT.total_seconds())
    await asyncio.wait_for(PARENT_WAITING[key].wait(), timeout=WAIT.total_seconds())
    n: int = item["n"]
    return n * n


square_wf = workflow(name="orch-square-child")


@square_wf.v("1.0.0")
async def square_v1(run: Run, item: dict[str, Any]) -> int:
    LEDGER.hit("orch-square-child", item["key"], run.id)
    return await square.start(run, item)


fan_wf = workflow(name="orch-fan-out")


@fan_wf.v("1.0.0")
async def fan_v1(run: Run, key: str) -> dict[str, Any]:
    LEDGER.hit("orch-fan-out", key)
    children = await asyncio.gather(*(square_v1.start_as_child(run, {"key": key, "n": n}) for n in range(FAN_OUT)))
    results = await asyncio.gather(*(c.wait_for_status("completed", timeout=timedelta(minutes=5)) for c in children))
    return {
        "statuses": sorted({r.status for r in results}),
        "outputs": [r.output for r in results],
        "children": [c.id for c in children],
    }


async def test_fan_out_ten_children_in_parallel_and_gather_their_results(aiki: Any) -> None:
    key = new_key()
    ALL_ARRIVED[key] = asyncio.Event()
    PARENT_WAITING[key] = asyncio.Event()
    # Only a worker of the "orch" pool runs anything: the children must inherit the parent's pool.
    await aiki.worker([fan_v1, square_v1], concurrency=FAN_OUT + 2, pools=["orch"])

    handle = await fan_v1.with_options(pool="orch").start(aiki.client, key)
    await handle.wait_for_status("awaiting_child", timeout=WAIT)
    PARENT_WAITING[key].set()
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())

    assert output["statuses"] == ["completed"]
    assert output["outputs"] == [n * n for n in range(FAN_OUT)]
    # However often the parent replayed, each child was started once.
    assert LEDGER.count("orch-square", key) == FAN_OUT
    assert len(set(output["children"])) == FAN_OUT
    for child_id in output["children"]:
        child = await get_run(aiki.http, child_id)
        assert child["parent_run_id"] == handle.id
        assert child["status"] == "completed"
        assert child["pool"] == "orch"
    assert len(set(LEDGER.values("orch-square-child", key))) == FAN_OUT
    statuses = [h["to_status"] for h in await get_history(aiki.http, handle.id)]
    assert "awaiting_child" in statuses


# ---------------------------------------------------------------------------------------------
# The parent wakes on any terminal status of its child, and when its wait times out
# ---------------------------------------------------------------------------------------------

failing_wf = workflow(name="orch-failing-child")


@failing_wf.v("1.0.0")
async def failing_v1(run: Run, key: str) -> str:
    raise ValueError(f"child {key} broke")


sleepy_wf = workflow(name="orch-sleepy-child")


async def sleepy_child_ran(key: str) -> str:
    """The sleepy child's id once it has run: a parent may suspend before its child is claimed."""
    deadline = asyncio.get_running_loop().time() + WAIT.total_seconds()
    while not LEDGER.values("orch-sleepy-child", key):
        assert asyncio.get_running_loop().time() < deadline, "the child never ran"
        await asyncio.sleep(0.01)
    child_id: str = LEDGER.values("orch-sleepy-child", key)[0]
    return child_id


@sleepy_wf.v("1.0.0")
async def sleepy_v1(run: Run, key: str) -> str:
    LEDGER.hit("orch-sleepy-child", key, run.id)
    await run.sleep(timedelta(hours=1), name="long")
    return "woke"


waiting_wf = workflow(name="orch-waiting-parent")


def _describe(result: ChildResult[Any]) -> dict[str, Any]:
    return {
        "status": result.status,
        "timeout": result.timeout,
        "output": result.output,
        "error": result.error.message if result.error else None,
        "cause": result.error.cause if result.error else None,
    }


@waiting_wf.v("1.0.0")
async def waiting_v1(run: Run, spec: dict[str, Any]) -> dict[str, Any]:
    child_version = {"fail": failing_v1, "sleep": sleepy_v1}[spec["child"]]
    child = await child_version.start_as_child(run, spec["key"])
    timeout = timedelta(milliseconds=spec["timeout_ms"]) if spec.get("timeout_ms") else None
    result = await child.wait_for_status("completed", timeout=timeout)
    return {**_describe(result), "child": child.id}


async def test_parent_wakes_when_its_child_fails(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([waiting_v1, failing_v1])
    handle = await waiting_v1.start(aiki.client, {"child": "fail", "key": key})
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())
    assert output["status"] == "failed"
    assert output["timeout"] is False
    assert output["output"] is None
    assert f"child {key} broke" in output["error"]
    assert (await get_run(aiki.http, output["child"]))["status"] == "failed"


async def test_parent_wakes_when_its_child_is_cancelled(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([waiting_v1, sleepy_v1])
    handle = await waiting_v1.start(aiki.client, {"child": "sleep", "key": key})
    await handle.wait_for_status("awaiting_child", timeout=WAIT)
    child_id = await sleepy_child_ran(key)
    child = await sleepy_v1.get_handle(aiki.client, child_id)
    await child.wait_for_status("sleeping", timeout=WAIT)

    await child.cancel("not needed")
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())
    assert output == {
        "status": "cancelled",
        "timeout": False,
        "output": None,
        "error": "not needed",
        "cause": "cancelled",
        "child": child_id,
    }
    history = await get_history(aiki.http, handle.id)
    woke = [h for h in history if h["from_status"] == "awaiting_child"]
    assert woke
    assert woke[0]["to_status"] == "queued"
    assert child_id in woke[0]["reason"]


async def test_child_wait_timeout(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([waiting_v1, sleepy_v1])
    handle = await waiting_v1.start(aiki.client, {"child": "sleep", "key": key, "timeout_ms": 300})
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())
    assert output["timeout"] is True
    assert output["status"] is None
    # The wait gave up; the child itself goes on (the parent completing does not end it). On a
    # busy machine it may not have run yet when the 300 ms are up: wait for it to reach its sleep.
    child = await sleepy_v1.get_handle(aiki.client, output["child"])
    await child.wait_for_status("sleeping", timeout=WAIT)
    history = await get_history(aiki.http, handle.id)
    assert any(h["from_status"] == "awaiting_child" and "timed out" in (h["reason"] or "") for h in history)


# ---------------------------------------------------------------------------------------------
# Cancel cascade: the server cancels every live descendant, no worker needed
# ---------------------------------------------------------------------------------------------

leaf_wf = workflow(name="orch-tree-leaf")
mid_wf = workflow(name="orch-tree-mid")
root_wf = workflow(name="orch-tree-root")


@leaf_wf.v("1.0.0")
async def leaf_v1(run: Run, key: str) -> str:
    LEDGER.hit("orch-tree-leaf", key, run.id)
    await run.sleep(timedelta(hours=1), name="forever")
    return "leaf"


@mid_wf.v("1.0.0")
async def mid_v1(run: Run, key: str) -> str:
    LEDGER.hit("orch-tree-mid", key, run.id)
    leaves = [await leaf_v1.start_as_child(run, f"{key}-{i}") for i in range(2)]
    for leaf in leaves:
        await leaf.wait_for_status("completed")
    return "mid"


@root_wf.v("1.0.0")
async def root_v1(run: Run, key: str) -> str:
    mid = await mid_v1.start_as_child(run, key)
    await mid.wait_for_status("completed")
    return "root"


async def _until(predicate: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT.total_seconds()
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_cancel_of_a_three_level_tree_cancels_every_descendant_without_a_worker(aiki: Any) -> None:
    key = new_key()
    worker = await aiki.worker([root_v1, mid_v1, leaf_v1])
    root = await root_v1.start(aiki.client, key)

    async def leaves_asleep() -> bool:
        ids = {v for i in range(2) for v in LEDGER.values("orch-tree-leaf", f"{key}-{i}")}
        if len(ids) < 2:
            return False
        statuses = [(await get_run(aiki.http, i))["status"] for i in ids]
        return statuses == ["sleeping", "sleeping"]

    await _until(leaves_asleep, "both leaves asleep")
    await root.wait_for_status("awaiting_child", timeout=WAIT)
    mid_id = LEDGER.values("orch-tree-mid", key)[0]
    leaf_ids = sorted({v for i in range(2) for v in LEDGER.values("orch-tree-leaf", f"{key}-{i}")})
    # The mid suspends once it has started both leaves, maybe after they are asleep: wait for it.
    await (await mid_v1.get_handle(aiki.client, mid_id)).wait_for_status("awaiting_child", timeout=WAIT)
    mid_view = await get_run(aiki.http, mid_id)
    assert mid_view["status"] == "awaiting_child"
    assert mid_view["parent_run_id"] == root.id
    assert [(await get_run(aiki.http, i))["parent_run_id"] for i in leaf_ids] == [mid_id, mid_id]
    before = {i: (await get_run(aiki.http, i))["revision"] for i in [mid_id, *leaf_ids]}

    await worker.stop(grace=timedelta(seconds=1))
    resp = await aiki.http.post(f"{API}/runs/{root.id}/cancel", json={"reason": "tree no longer needed"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"

    for run_id in [mid_id, *leaf_ids]:
        view = await get_run(aiki.http, run_id)
        assert view["status"] == "cancelled", run_id
        assert view["error"]["cause"] == "cancelled"
        assert view["revision"] > before[run_id]  # any executor is fenced
        assert view["finished_at"] is not None
        last = (await get_history(aiki.http, run_id))[-1]
        assert last["to_status"] == "cancelled"
        assert last["from_status"] == ("awaiting_child" if run_id == mid_id else "sleeping")
    root_history = await get_history(aiki.http, root.id)
    assert root_history[-1]["to_status"] == "cancelled"
    assert root_history[-1]["reason"] == "tree no longer needed"

    # Nothing comes back to life: a second cancel is a no-op and no run is queued.
    resp = await aiki.http.post(f"{API}/runs/{root.id}/cancel", json={})
    assert resp.status_code == 200
    queued = (await aiki.http.get(f"{API}/runs", params={"status": "queued"})).json()["items"]
    assert not {r["id"] for r in queued} & {mid_id, *leaf_ids}


# ---------------------------------------------------------------------------------------------
# Fencing of child starts, and execution timeouts across the tree
# ---------------------------------------------------------------------------------------------


async def test_a_stale_parent_executor_cannot_start_children(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([waiting_v1, sleepy_v1])
    handle = await waiting_v1.start(aiki.client, {"child": "sleep", "key": key})
    await handle.wait_for_status("awaiting_child", timeout=WAIT)
    child_id = await sleepy_child_ran(key)
    parent = await get_run(aiki.http, handle.id)
    body = {
        "revision": parent["revision"],  # the revision the last executor held; the run is suspended
        "address": "child:orch-sleepy-child@1.0.0:other",
        "seq": 0,
        "workflow": "orch-sleepy-child",
        "version": "1.0.0",
        "input": "x",
    }
    resp = await aiki.http.post(f"{API}/runs/{handle.id}/children", json=body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "stale_revision"
    resp = await aiki.http.post(f"{API}/runs/{handle.id}/children", json={**body, "revision": parent["revision"] - 1})
    assert resp.status_code == 409, resp.text
    # Exactly one child exists: the one the parent started.
    runs = (await aiki.http.get(f"{API}/runs", params={"workflow": "orch-sleepy-child"})).json()["items"]
    assert [r["id"] for r in runs if r.get("parent_run_id") == handle.id] == [child_id]
    await handle.cancel()


bounded_wf = workflow(name="orch-bounded-parent")


@bounded_wf.v("1.0.0", timeout=timedelta(milliseconds=600))
async def bounded_v1(run: Run, key: str) -> str:
    child = await sleepy_v1.start_as_child(run, key)
    await child.wait_for_status("completed")
    return "unreachable"


bounded_child_wf = workflow(name="orch-bounded-child")


@bounded_child_wf.v("1.0.0", timeout=timedelta(milliseconds=400))
async def bounded_child_v1(run: Run, key: str) -> str:
    await run.sleep(timedelta(hours=1), name="long")
    return "unreachable"


child_waiter_wf = workflow(name="orch-child-waiter")


@child_waiter_wf.v("1.0.0")
async def child_waiter_v1(run: Run, key: str) -> dict[str, Any]:
    child = await bounded_child_v1.start_as_child(run, key)
    return _describe(await child.wait_for_status("completed"))


async def test_a_parent_that_times_out_cancels_its_live_children(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([bounded_v1, sleepy_v1])
    handle = await bounded_v1.start(aiki.client, key)
    view = (await aiki.http.get(f"{API}/runs/{handle.id}", params={"wait_for": "failed", "timeout_ms": 20_000})).json()
    assert view["status"] == "failed"
    assert view["error"]["cause"] == "timeout"
    # The child may have been cancelled before any worker ran it: find it by its parent.
    children = (await aiki.http.get(f"{API}/runs", params={"parent_run_id": handle.id})).json()["items"]
    assert [c["status"] for c in children] == ["cancelled"]


async def test_a_child_that_times_out_wakes_its_parent_with_failed(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([child_waiter_v1, bounded_child_v1])
    handle = await child_waiter_v1.start(aiki.client, key)
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())
    assert output["status"] == "failed"
    assert output["cause"] == "timeout"
