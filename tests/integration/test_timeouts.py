"""Execution timeouts (SPEC §2 "Timeouts"): a hung handler never holds a run forever.

A task's ``timeout`` cancels the attempt and counts as a failed attempt (its retry policy applies).
A version's ``timeout`` is wall-clock from the run's first claim and enforced by the server's
timer, so it ends a run whatever state its worker is in.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiki import RetryPolicy, Run, TaskFailedError, task, workflow

from .helpers import LEDGER, WAIT, get_history, get_run, new_key

NEVER: dict[str, asyncio.Event] = {}


@task(
    name="tmo-hung",
    timeout=timedelta(milliseconds=200),
    retry=RetryPolicy.fixed(max_attempts=2, delay=timedelta(milliseconds=10)),
)
async def hung(key: str) -> str:
    LEDGER.hit("tmo-hung", key)
    await NEVER.setdefault(key, asyncio.Event()).wait()  # never set
    return "unreachable"


task_wf = workflow(name="tmo-task-wf")


@task_wf.v("1.0.0")
async def task_v1(run: Run, key: str) -> dict[str, Any]:
    try:
        await hung.start(run, key)
    except TaskFailedError as e:
        return {"failed": e.task_name, "message": e.error.message, "cause": e.error.cause, "type": e.error.type}
    return {"failed": None}


async def test_task_timeout_cancels_a_hung_handler_and_counts_as_a_failed_attempt(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([task_v1])
    handle = await task_v1.start(aiki.client, key)
    output = await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds())
    assert output == {
        "failed": "tmo-hung",
        "message": "task 'tmo-hung' exceeded its timeout of 0:00:00.200000",
        "cause": "timeout",
        "type": "TimeoutError",
    }
    assert LEDGER.count("tmo-hung", key) == 2  # the retry policy applied: two attempts


run_wf = workflow(name="tmo-run-wf")


@run_wf.v("1.0.0", timeout=timedelta(milliseconds=500))
async def run_v1(run: Run, key: str) -> str:
    LEDGER.hit("tmo-run", key)
    await NEVER.setdefault(key, asyncio.Event()).wait()  # a hung workflow handler
    return "unreachable"


@run_wf.v("2.0.0", timeout=timedelta(milliseconds=500))
async def run_v2(run: Run, key: str) -> str:
    await run.sleep(timedelta(hours=1), name="long")  # suspended: only the server can end it
    return "unreachable"


async def test_run_timeout_ends_a_hung_handler(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([run_v1])
    handle = await run_v1.start(aiki.client, key)
    view = await _wait_terminal(aiki, handle.id)
    assert view["status"] == "failed"
    assert view["error"]["cause"] == "timeout"
    assert LEDGER.count("tmo-run", key) == 1
    assert view["finished_at"] - view["created_at"] >= 500


async def test_run_timeout_is_wall_clock_and_enforced_by_the_server(aiki: Any) -> None:
    worker = await aiki.worker([run_v2])
    handle = await run_v2.start(aiki.client, new_key())
    await handle.wait_for_status("sleeping", timeout=WAIT)
    await worker.stop(grace=timedelta(seconds=1))  # no worker: the server's timer alone ends the run
    view = await _wait_terminal(aiki, handle.id)
    assert view["status"] == "failed"
    assert view["error"]["cause"] == "timeout"
    assert "500 ms" in view["error"]["message"]
    last = (await get_history(aiki.http, handle.id))[-1]
    assert (last["from_status"], last["to_status"], last["reason"]) == ("sleeping", "failed", "execution timeout")


async def _wait_terminal(aiki: Any, run_id: str) -> dict[str, Any]:
    resp = await aiki.http.get(
        f"/api/v1/runs/{run_id}", params={"wait_for": "completed,failed,cancelled", "timeout_ms": 20_000}
    )
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()
    if view["status"] not in ("completed", "failed", "cancelled"):
        view = await get_run(aiki.http, run_id)
    return view
