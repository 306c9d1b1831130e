"""Replay: memoized tasks, gather, and non-determinism detection (SPEC §2, docs/internals.md "Replay")."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from aiki import Run, RunFailedError, event, task, workflow

from .helpers import LEDGER, WAIT, get_history, get_run, is_non_determinism, new_key

# ---------------------------------------------------------------------------------------------
# Memoization across a replay
# ---------------------------------------------------------------------------------------------


@task(name="replay-step-a")
async def step_a(key: str) -> str:
    LEDGER.hit("replay-step-a", key)
    return f"a:{key}"


@task(name="replay-step-b")
async def step_b(key: str) -> str:
    LEDGER.hit("replay-step-b", key)
    return f"b:{key}"


memo_wf = workflow(name="replay-memo")


@memo_wf.v("1.0.0")
async def memo_v1(run: Run, key: str) -> list[str]:
    LEDGER.hit("replay-memo-body", key)
    a = await step_a.start(run, key)
    # A durable sleep ends this activation; the next one replays the function from the top.
    await run.sleep(timedelta(milliseconds=50), name="between")
    b = await step_b.start(run, key)
    return [a, b]


async def test_completed_task_is_not_rerun_on_replay(aiki_suspending: Any) -> None:
    aiki = aiki_suspending  # the sleep must end the activation
    key = new_key()
    await aiki.worker([memo_v1])

    handle = await memo_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == [f"a:{key}", f"b:{key}"]
    # The body ran at least twice (before and after the sleep): a replay did happen ...
    assert LEDGER.count("replay-memo-body", key) >= 2
    # ... and it returned A's recorded result instead of running A again.
    assert LEDGER.count("replay-step-a", key) == 1
    assert LEDGER.count("replay-step-b", key) == 1
    history = await get_history(aiki.http, handle.id)
    assert "sleeping" in [h["to_status"] for h in history]


# ---------------------------------------------------------------------------------------------
# asyncio.gather of tasks
# ---------------------------------------------------------------------------------------------

PARALLEL_TASK_SECONDS = 0.2


@task(name="replay-parallel-step")
async def parallel_step(item: str) -> str:
    key, idx = item.rsplit("|", 1)
    LEDGER.hit("replay-parallel-step", item)
    LEDGER.hit("replay-parallel-start", key)
    # Later items finish first, so results in call order are not just completion order.
    await asyncio.sleep(PARALLEL_TASK_SECONDS * (3 - int(idx)) / 3)
    LEDGER.hit("replay-parallel-end", key)
    return f"done-{idx}"


gather_wf = workflow(name="replay-gather")


@gather_wf.v("1.0.0")
async def gather_v1(run: Run, key: str) -> list[str]:
    LEDGER.hit("replay-gather-body", key)
    results = await asyncio.gather(*(parallel_step.start(run, f"{key}|{i}") for i in range(3)))
    await run.sleep(timedelta(milliseconds=50), name="after-gather")
    return list(results)


async def test_gather_runs_tasks_in_parallel_and_replays_them_once(aiki_suspending: Any) -> None:
    aiki = aiki_suspending  # the sleep must end the activation
    key = new_key()
    await aiki.worker([gather_v1])

    handle = await gather_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == ["done-0", "done-1", "done-2"]
    assert LEDGER.count("replay-gather-body", key) >= 2  # replayed after the sleep
    for i in range(3):
        assert LEDGER.count("replay-parallel-step", f"{key}|{i}") == 1
    # In parallel: all three handlers had started before the first one finished.
    starts = LEDGER.times("replay-parallel-start", key)
    ends = LEDGER.times("replay-parallel-end", key)
    assert len(starts) == 3
    assert max(starts) < min(ends)


# ---------------------------------------------------------------------------------------------
# Non-determinism: one workflow whose code the test "redeploys" while a run is suspended
# ---------------------------------------------------------------------------------------------

CODE_VERSION: dict[str, str] = {}
"""Run key → which variant of the workflow code is "deployed" for it (default ``base``)."""


def _nd_task(name: str) -> Any:
    @task(name=name)
    async def handler(key: str) -> str:
        LEDGER.hit(name, key)
        return f"{name}:{key}"

    return handler


nd_a = _nd_task("replay-nd-a")
nd_b = _nd_task("replay-nd-b")
nd_c = _nd_task("replay-nd-c")
nd_d = _nd_task("replay-nd-d")
nd_inserted = _nd_task("replay-nd-inserted")

refactor_wf = workflow(name="replay-refactor")


@refactor_wf.v("1.0.0", events={"go": event()})
async def refactor_v1(run: Run, key: str) -> str:
    code = CODE_VERSION.get(key, "base")
    if code == "insert":
        await nd_inserted.start(run, key)  # new work placed before recorded A and B
        await nd_a.start(run, key)
        await nd_b.start(run, key)
    elif code == "changed_input":
        await nd_a.start(run, f"{key}-changed")  # same task, different input: a new address
        await nd_b.start(run, key)
    elif code == "reorder":
        await nd_b.start(run, key)
        await nd_a.start(run, key)
    elif code == "remove":
        await nd_b.start(run, key)
    else:  # base, append
        await nd_a.start(run, key)
        await nd_b.start(run, key)

    await run.events.go.wait(timeout=timedelta(minutes=5))

    # The removal variant does no new work after the suspension: under the documented rule any
    # new task call would see A's recorded entry unconsumed.
    if code != "remove":
        await nd_c.start(run, key)
    if code == "append":
        await nd_d.start(run, key)
    return code


async def _suspend_after_a_and_b(aiki: Any) -> tuple[str, Any]:
    """Start a run on the base code and wait until it recorded A and B and waits for ``go``."""
    key = new_key()
    await aiki.worker([refactor_v1])
    handle = await refactor_v1.start(aiki.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-b", key) == 1
    return key, handle


async def _redeploy_and_resume(handle: Any, key: str, code: str) -> None:
    CODE_VERSION[key] = code
    await handle.events.go.send()


async def test_task_inserted_before_recorded_work_fails_with_non_determinism(aiki: Any) -> None:
    key, handle = await _suspend_after_a_and_b(aiki)

    await _redeploy_and_resume(handle, key, "insert")
    await handle.wait_for_status("failed", timeout=WAIT)

    with pytest.raises(RunFailedError):
        await handle.result()
    run = await get_run(aiki.http, handle.id)
    assert run["status"] == "failed"
    assert is_non_determinism(run["error"]), run["error"]
    # The error lists the recorded entries the replay left unconsumed.
    assert "replay-nd-a" in run["error"]["message"]
    # Detected before the inserted task (or anything after it) ran.
    assert LEDGER.count("replay-nd-inserted", key) == 0
    assert LEDGER.count("replay-nd-c", key) == 0
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-b", key) == 1


async def test_changed_task_input_fails_with_non_determinism(aiki: Any) -> None:
    key, handle = await _suspend_after_a_and_b(aiki)

    await _redeploy_and_resume(handle, key, "changed_input")
    await handle.wait_for_status("failed", timeout=WAIT)

    with pytest.raises(RunFailedError):
        await handle.result()
    run = await get_run(aiki.http, handle.id)
    assert is_non_determinism(run["error"]), run["error"]
    assert "replay-nd-a" in run["error"]["message"]
    assert LEDGER.count("replay-nd-a", f"{key}-changed") == 0
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-c", key) == 0


async def test_reordered_tasks_replay_without_rerunning(aiki: Any) -> None:
    key, handle = await _suspend_after_a_and_b(aiki)

    await _redeploy_and_resume(handle, key, "reorder")
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "reorder"
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-b", key) == 1
    assert LEDGER.count("replay-nd-c", key) == 1


async def test_removed_task_replays_without_failure(aiki: Any) -> None:
    key, handle = await _suspend_after_a_and_b(aiki)

    await _redeploy_and_resume(handle, key, "remove")
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "remove"
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-b", key) == 1


async def test_appended_task_runs_after_replay(aiki: Any) -> None:
    key, handle = await _suspend_after_a_and_b(aiki)

    await _redeploy_and_resume(handle, key, "append")
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "append"
    assert LEDGER.count("replay-nd-a", key) == 1
    assert LEDGER.count("replay-nd-b", key) == 1
    assert LEDGER.count("replay-nd-c", key) == 1
    assert LEDGER.count("replay-nd-d", key) == 1
