"""``GET /runs/{id}/detail`` and ``GET /runs/{id}/history?group_by=attempt``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiki import RetryPolicy, Run, event, task, workflow

from .helpers import API, LEDGER, WAIT, get_history, new_key, task_address
from .query_helpers import insert_child


@task(name="detail-double")
async def double(n: int) -> int:
    return n * 2


@task(name="detail-flaky", retry=RetryPolicy.fixed(max_attempts=3, delay=timedelta(milliseconds=20)))
async def flaky(key: str) -> str:
    if LEDGER.hit("detail-flaky", key) == 1:
        raise RuntimeError("first try fails")
    return "steady"


detail_wf = workflow(name="detail-wf")


@detail_wf.v("1.0.0", events={"go": event(dict)})
async def detail_v1(run: Run, key: str) -> dict[str, Any]:
    doubled = await double.start(run, 21)
    steady = await flaky.start(run, key)
    await run.sleep(timedelta(milliseconds=30), name="nap")
    got = await run.events.go.wait(timeout=timedelta(minutes=5))
    return {"doubled": doubled, "steady": steady, "go": got.data}


async def test_run_detail_shows_tasks_events_sleeps_and_children(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([detail_v1])
    handle = await detail_v1.start(aiki.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)
    await handle.events.go.send({"ok": True}, reference_id="go-1")
    await handle.wait_for_status("completed", timeout=WAIT)
    # Of a version no worker serves, so they stay queued.
    children = [await insert_child(aiki, handle.id, "detail-child", "1") for _ in range(2)]

    resp = await aiki.http.get(f"{API}/runs/{handle.id}/detail")
    assert resp.status_code == 200, resp.text
    detail = resp.json()
    assert detail["run"]["id"] == handle.id
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["output"] == {"doubled": 42, "steady": "steady", "go": {"ok": True}}

    tasks = detail["tasks"]
    assert [(t["name"], t["seq"], t["status"], t["attempts"]) for t in tasks] == [
        ("detail-double", 0, "completed", 1),
        ("detail-flaky", 0, "completed", 2),
    ]
    first, second = tasks
    assert first["address"] == task_address("detail-double", 21)
    assert first["input"] == 21
    assert first["output"] == 42
    assert second["address"] == task_address("detail-flaky", key)
    assert second["input"] == key
    assert second["output"] == "steady"
    assert "error" not in second  # the failed attempt was overwritten by the successful one
    for t in tasks:
        assert 0 < t["created_at"] <= t["updated_at"]
    assert second["updated_at"] >= second["created_at"] + 20  # the retry came after its delay

    [ev] = detail["events"]
    assert (ev["name"], ev["seq"], ev["data"], ev["reference_id"]) == ("go", 0, {"ok": True}, "go-1")
    [nap] = detail["sleeps"]
    assert (nap["name"], nap["seq"], nap["status"]) == ("nap", 0, "completed")
    assert nap["wake_at"] >= nap["created_at"] + 30
    assert detail["wait_timeouts"] == []
    assert sorted(c["id"] for c in detail["children"]) == sorted(children)
    assert {c["status"] for c in detail["children"]} == {"queued"}
    assert detail["children_truncated"] is False

    # The hot route stays as it was: the run alone.
    plain = (await aiki.http.get(f"{API}/runs/{handle.id}")).json()
    assert plain == detail["run"]
    missing = await aiki.http.get(f"{API}/runs/00000000-0000-7000-8000-00000000dead/detail")
    assert missing.status_code == 404
    assert missing.json()["code"] == "run_not_found"


@task(name="detail-wf-step", retry=RetryPolicy.never())
async def wf_step(key: str) -> str:
    if LEDGER.hit("detail-wf-step", key) == 1:
        raise RuntimeError("fails on the first workflow attempt")
    return "done"


retry_wf = workflow(name="detail-retry-wf")


@retry_wf.v("1.0.0", retry=RetryPolicy.fixed(max_attempts=2, delay=timedelta(milliseconds=30)))
async def retry_v1(run: Run, key: str) -> int:
    await wf_step.start(run, key)
    return run.attempt


async def test_history_grouped_by_attempt(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([retry_v1])
    handle = await retry_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)
    assert await handle.result() == 2

    flat = await get_history(aiki.http, handle.id)  # the flat route is unchanged: a list
    resp = await aiki.http.get(f"{API}/runs/{handle.id}/history", params={"group_by": "attempt"})
    assert resp.status_code == 200, resp.text
    grouped = resp.json()
    assert grouped["run_id"] == handle.id
    one, two = grouped["attempts"]
    assert (one["attempt"], two["attempt"]) == (1, 2)
    assert [e for a in grouped["attempts"] for e in a["entries"]] == flat
    assert [e["to_status"] for e in one["entries"]] == ["queued", "running", "awaiting_retry"]
    assert one["last_status"] == "awaiting_retry"
    assert "attempt 1 failed" in one["entries"][-1]["reason"]
    assert [e["to_status"] for e in two["entries"]] == ["queued", "running", "completed"]
    assert two["last_status"] == "completed"
    assert one["started_at"] == flat[0]["created_at"]
    assert one["ended_at"] == two["started_at"] == two["entries"][0]["created_at"]
    assert two["ended_at"] == flat[-1]["created_at"]

    # The detail keeps the entry the workflow retry discarded, with its error.
    detail = (await aiki.http.get(f"{API}/runs/{handle.id}/detail")).json()
    assert [(t["name"], t["status"]) for t in detail["tasks"]] == [
        ("detail-wf-step", "discarded"),
        ("detail-wf-step", "completed"),
    ]
    assert "fails on the first workflow attempt" in detail["tasks"][0]["error"]["message"]

    missing = await aiki.http.get(
        f"{API}/runs/00000000-0000-7000-8000-00000000dead/history", params={"group_by": "attempt"}
    )
    assert missing.status_code == 404
