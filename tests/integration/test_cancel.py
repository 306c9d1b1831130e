"""Cancel fences executors and timers (SPEC §3 "Every run has a revision", "Cancel")."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from aiki import Run, RunCancelledError, task, workflow

from .helpers import API, LEDGER, WAIT, get_history, get_run, new_key, task_address

ENTERED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}

# How long the executor gets to finish its handler and try to write after the test releases it.
# The point is that nothing happens in that time.
SETTLE_SECONDS = 0.5


@task(name="cancel-blocking")
async def blocking(key: str) -> str:
    LEDGER.hit("cancel-blocking", key)
    ENTERED[key].set()
    await RELEASE[key].wait()
    LEDGER.hit("cancel-blocking-returned", key)
    return "finished"


@task(name="cancel-after")
async def after_blocking(key: str) -> None:
    LEDGER.hit("cancel-after", key)


blocking_wf = workflow(name="cancel-blocking-wf")


@blocking_wf.v("1.0.0")
async def blocking_v1(run: Run, key: str) -> str:
    await blocking.start(run, key)
    await after_blocking.start(run, key)
    return "done"


def _unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    for field in ("status", "revision", "attempt", "updated_at", "output", "error", "finished_at"):
        assert after.get(field) == before.get(field), field


async def test_cancel_fences_the_executor_of_a_running_task(aiki: Any) -> None:
    key = new_key()
    ENTERED[key], RELEASE[key] = asyncio.Event(), asyncio.Event()
    await aiki.worker([blocking_v1])

    handle = await blocking_v1.start(aiki.client, key)
    await asyncio.wait_for(ENTERED[key].wait(), timeout=WAIT.total_seconds())
    running = await get_run(aiki.http, handle.id)
    assert running["status"] == "running"
    executor_revision = running["revision"]

    await handle.cancel("cancelled by the test")
    await handle.wait_for_status("cancelled", timeout=WAIT)
    cancelled = await get_run(aiki.http, handle.id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["revision"] > executor_revision
    history = await get_history(aiki.http, handle.id)

    # The handler returns now; its executor holds the old revision, so nothing it writes lands.
    RELEASE[key].set()
    await asyncio.sleep(SETTLE_SECONDS)

    _unchanged(cancelled, await get_run(aiki.http, handle.id))
    assert await get_history(aiki.http, handle.id) == history
    assert LEDGER.count("cancel-blocking", key) == 1
    assert LEDGER.count("cancel-after", key) == 0
    with pytest.raises(RunCancelledError):
        await handle.result()

    # A write naming the old revision, as that executor would send it, is refused.
    resp = await aiki.http.post(
        f"{API}/runs/{handle.id}/tasks",
        json={
            "revision": executor_revision,
            "address": task_address("cancel-blocking", key),
            "seq": 0,
            "name": "cancel-blocking",
            "status": "completed",
            "attempts": 1,
            "input": key,
            "output": "finished",
        },
    )
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "stale_revision"
    resp = await aiki.http.post(
        f"{API}/runs/{handle.id}/transition",
        json={"revision": executor_revision, "kind": "complete", "output": "hijacked"},
    )
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "stale_revision"

    _unchanged(cancelled, await get_run(aiki.http, handle.id))
    assert await get_history(aiki.http, handle.id) == history


# ---------------------------------------------------------------------------------------------
# Cancel a sleeping run: its timer must not bring it back
# ---------------------------------------------------------------------------------------------


NAP_MS = 1000


@task(name="cancel-after-sleep")
async def after_sleep(key: str) -> None:
    LEDGER.hit("cancel-after-sleep", key)


sleeping_wf = workflow(name="cancel-sleeping-wf")


@sleeping_wf.v("1.0.0")
async def sleeping_v1(run: Run, key: str) -> None:
    await run.sleep(timedelta(milliseconds=NAP_MS), name="nap")
    await after_sleep.start(run, key)


async def test_cancel_during_sleep_stops_the_run_for_good(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([sleeping_v1])

    handle = await sleeping_v1.start(aiki.client, key)
    await handle.wait_for_status("sleeping", timeout=WAIT)
    await handle.cancel("no longer needed")
    await handle.wait_for_status("cancelled", timeout=WAIT)
    cancelled = await get_run(aiki.http, handle.id)
    history = await get_history(aiki.http, handle.id)
    asleep = [h["to_status"] for h in history].index("sleeping")
    assert history[asleep + 1]["to_status"] == "cancelled"  # cancelled while still asleep
    assert history[asleep + 1]["created_at"] < history[asleep]["created_at"] + NAP_MS

    # Past the sleep's deadline: the timer must not have requeued the run.
    await asyncio.sleep(NAP_MS / 1000 + SETTLE_SECONDS)
    _unchanged(cancelled, await get_run(aiki.http, handle.id))
    assert await get_history(aiki.http, handle.id) == history
    assert LEDGER.count("cancel-after-sleep", key) == 0
    with pytest.raises(RunCancelledError):
        await handle.result()
