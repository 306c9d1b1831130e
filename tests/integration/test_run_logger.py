"""``run.logger`` logs each line once (issue 10, defect 5): it is silent while the workflow replays
what an earlier execution already did, across a run that suspends and resumes many times (sleeps,
an event wait, a child wait, a wait that times out). In process and over HTTP, on both databases."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from aiki import Run, event, task, workflow
from tests.conftest import AikiHarness

from .helpers import WAIT, new_key


@pytest.fixture(params=["suspend", "hold"])
async def aiki(request: pytest.FixtureRequest, make_aiki: Any) -> AikiHarness:
    # "suspend": every sleep suspends its run, so each one ends an execution; "hold": short sleeps
    # are waited out by their executor, which goes on to the next step without a replay.
    options = {"sleep_hold_max": timedelta(0)} if request.param == "suspend" else {}
    harness: AikiHarness = await make_aiki(**options)
    return harness


@task(name="log-step")
async def log_step(key: str) -> str:
    return key.upper()


log_child_wf = workflow(name="log-child")


@log_child_wf.v("1.0.0")
async def log_child_v1(run: Run, key: str) -> str:
    run.logger.info("C1 child ran %s", key)
    return key


log_wf = workflow(name="log-parent")

LINES = [f"L{i}" for i in range(1, 11)]


@log_wf.v("1.0.0", events={"go": event(str)})
async def log_v1(run: Run, key: str) -> str:
    run.logger.info("L1 start %s", key)
    await log_step.start(run, key)
    run.logger.info("L2 after the task")
    await run.sleep(timedelta(milliseconds=10), name="first")
    run.logger.info("L3 after the first sleep")
    await run.sleep(timedelta(milliseconds=10), name="second")
    run.logger.info("L4 after the second sleep")
    got = await run.events.go.wait(timeout=timedelta(minutes=1))
    run.logger.info("L5 after the event %s", got.data)
    child = await log_child_v1.start_as_child(run, key)
    run.logger.info("L6 child started")
    result = await child.wait_for_status("completed", timeout=timedelta(minutes=1))
    run.logger.info("L7 child %s", result.status)
    timed = await run.events.go.wait(timeout=timedelta(milliseconds=20))
    run.logger.info("L8 second wait timed out: %s", timed.timeout)
    await log_step.start(run, key + "-again")
    run.logger.info("L9 after the second task")
    await run.sleep(timedelta(milliseconds=10), name="last")
    run.logger.info("L10 end")
    return key


async def test_each_line_is_logged_once_across_suspensions_and_replays(
    aiki: AikiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiki.workflow")
    key = new_key()
    await aiki.worker([log_v1, log_child_v1])
    handle = await log_v1.start(aiki.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)
    await handle.events.go.send("now")
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == key

    mine = [r for r in caplog.records if r.name == "aiki.workflow" and getattr(r, "run_id", None) == handle.id]
    counts = Counter(r.getMessage().split(" ", 1)[0] for r in mine)
    assert {line: counts[line] for line in LINES} == dict.fromkeys(LINES, 1), [r.getMessage() for r in mine]
    assert [r.getMessage().split(" ", 1)[0] for r in mine if r.getMessage().startswith("L")] == LINES
    assert all((r.workflow, r.version) == ("log-parent", "1.0.0") for r in mine)  # type: ignore[attr-defined]
    # The run was executed many times over (each execution replayed the ones before).
    statuses = [h.to_status for h in await aiki.client.history(handle.id)]
    assert statuses.count("running") >= 3, statuses
