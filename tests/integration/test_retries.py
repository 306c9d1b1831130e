"""Task and workflow retries (SPEC §2 "Retries", docs/internals.md "Retries")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from aiki import RetryPolicy, Run, RunFailedError, TaskFailedError, task, workflow

from .helpers import LEDGER, WAIT, error_text, get_history, get_run, new_key

# Timestamps are whole milliseconds on the wire; allow that much rounding below the policy's delay.
ROUNDING = 0.005

# ---------------------------------------------------------------------------------------------
# Task retry with exponential backoff, then success
# ---------------------------------------------------------------------------------------------


@task(
    name="retries-flaky",
    retry=RetryPolicy.exponential(max_attempts=3, base=timedelta(milliseconds=50)),
)
async def flaky(key: str) -> str:
    attempt = LEDGER.hit("retries-flaky", key)
    if attempt < 3:
        raise RuntimeError(f"transient failure {attempt}")
    return f"ok after {attempt}"


flaky_wf = workflow(name="retries-flaky-wf")


@flaky_wf.v("1.0.0")
async def flaky_v1(run: Run, key: str) -> str:
    return await flaky.start(run, key)


async def test_task_retries_with_exponential_backoff_then_succeeds(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([flaky_v1])

    handle = await flaky_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "ok after 3"
    assert LEDGER.count("retries-flaky", key) == 3
    first, second, third = LEDGER.times("retries-flaky", key)
    # base 50 ms, factor 2: the retries come at least 50 ms and then at least 100 ms apart.
    assert second - first >= 0.050 - ROUNDING
    assert third - second >= 0.100 - ROUNDING
    # Each failed attempt suspended the run until its retry was due.
    history = await get_history(aiki.http, handle.id)
    assert [h["to_status"] for h in history].count("awaiting_retry") == 2
    assert history[-1]["to_status"] == "completed"


# ---------------------------------------------------------------------------------------------
# Retry budget exhausted
# ---------------------------------------------------------------------------------------------


@task(
    name="retries-always-fails",
    retry=RetryPolicy.fixed(max_attempts=2, delay=timedelta(milliseconds=20)),
)
async def always_fails(key: str) -> None:
    LEDGER.hit("retries-always-fails", key)
    raise ValueError(f"card declined for {key}")


@task(name="retries-after-failure")
async def after_failure(key: str) -> None:
    LEDGER.hit("retries-after-failure", key)


exhausted_wf = workflow(name="retries-exhausted")


@exhausted_wf.v("1.0.0")
async def exhausted_v1(run: Run, key: str) -> None:
    await always_fails.start(run, key)
    await after_failure.start(run, key)


async def test_exhausted_task_retries_fail_the_run_with_the_task_error(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([exhausted_v1])

    handle = await exhausted_v1.start(aiki.client, key)
    await handle.wait_for_status("failed", timeout=WAIT)

    with pytest.raises(RunFailedError) as excinfo:
        await handle.result()
    # The user sees why: the task's own exception message.
    assert f"card declined for {key}" in str(excinfo.value)
    run = await get_run(aiki.http, handle.id)
    assert run["status"] == "failed"
    recorded = error_text(run["error"])
    assert f"card declined for {key}" in recorded
    assert "ValueError" in recorded
    assert LEDGER.count("retries-always-fails", key) == 2  # max_attempts, not more
    assert LEDGER.count("retries-after-failure", key) == 0


# ---------------------------------------------------------------------------------------------
# A failed task raises TaskFailedError into the workflow, also on replay
# ---------------------------------------------------------------------------------------------


@task(name="retries-declined", retry=RetryPolicy.never())
async def declined(key: str) -> None:
    LEDGER.hit("retries-declined", key)
    raise ValueError("declined")


caught_wf = workflow(name="retries-caught")


@caught_wf.v("1.0.0")
async def caught_v1(run: Run, key: str) -> str:
    try:
        await declined.start(run, key)
    except TaskFailedError as e:
        LEDGER.hit("retries-caught", key, e.task_name)
    await run.sleep(timedelta(milliseconds=50), name="after-catch")
    return "fallback"


async def test_workflow_can_catch_a_failed_task_and_replay_keeps_the_failure(aiki_suspending: Any) -> None:
    aiki = aiki_suspending  # the sleep must end the activation
    key = new_key()
    await aiki.worker([caught_v1])

    handle = await caught_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "fallback"
    assert LEDGER.count("retries-declined", key) == 1  # the recorded failure is replayed, not re-run
    caught = LEDGER.values("retries-caught", key)
    assert len(caught) >= 2  # caught on the first activation and again on the replay after the sleep
    assert set(caught) == {"retries-declined"}


# ---------------------------------------------------------------------------------------------
# Workflow-level retry replays completed tasks
# ---------------------------------------------------------------------------------------------


@task(name="retries-wf-a")
async def wf_task_a(key: str) -> str:
    LEDGER.hit("retries-wf-a", key)
    return "a"


@task(name="retries-wf-b", retry=RetryPolicy.never())
async def wf_task_b(key: str) -> str:
    if LEDGER.hit("retries-wf-b", key) == 1:
        raise RuntimeError("fails on the first workflow attempt")
    return "b"


workflow_retry_wf = workflow(name="retries-workflow-level")


@workflow_retry_wf.v("1.0.0", retry=RetryPolicy.fixed(max_attempts=2, delay=timedelta(milliseconds=50)))
async def workflow_retry_v1(run: Run, key: str) -> int:
    LEDGER.hit("retries-wf-attempt", key, run.attempt)
    await wf_task_a.start(run, key)
    await wf_task_b.start(run, key)
    return run.attempt


async def test_workflow_retry_replays_completed_tasks_and_reruns_failed_ones(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([workflow_retry_v1])

    handle = await workflow_retry_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == 2
    assert LEDGER.count("retries-wf-a", key) == 1  # completed on attempt 1, replayed on attempt 2
    assert LEDGER.count("retries-wf-b", key) == 2  # failed on attempt 1, re-run on attempt 2
    assert set(LEDGER.values("retries-wf-attempt", key)) == {1, 2}
    run = await get_run(aiki.http, handle.id)
    assert run["attempt"] == 2
