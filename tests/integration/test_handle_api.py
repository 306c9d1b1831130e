"""Run handle details users trip over (issue 10, defect 12): ``wait_for_status`` takes seconds as a
number, and cancel is idempotent. In process (local port) and over HTTP, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from aiki import InvalidTransitionError, Run, WaitTimeoutError, event, workflow
from tests.conftest import AikiHarness

from .helpers import WAIT, new_key

handle_wf = workflow(name="handle-api")


@handle_wf.v("1.0.0")
async def handle_v1(run: Run, key: str) -> str:
    return key


numbers_wf = workflow(name="handle-api-numbers")


@numbers_wf.v("1.0.0", events={"never": event()})
async def numbers_v1(run: Run, key: str) -> dict[str, Any]:
    """Timeouts in seconds as numbers inside a workflow too (event and child waits)."""
    waited = await run.events.never.wait(timeout=0.05)
    child = await handle_v1.start_as_child(run, key)
    result = await child.wait_for_status("completed", timeout=30)
    try:
        await run.events.never.wait(timeout="soon")  # type: ignore[arg-type]
        refused = ""
    except TypeError as exc:
        refused = str(exc)
    return {"timed_out": waited.timeout, "child": result.output, "refused": refused}


async def test_waits_inside_a_workflow_take_seconds_as_a_number(aiki: AikiHarness) -> None:
    await aiki.worker([numbers_v1, handle_v1])
    key = new_key()
    output = await asyncio.wait_for(_run(aiki, key), WAIT.total_seconds())
    assert output["timed_out"] is True
    assert output["child"] == key
    assert "timeout" in output["refused"]


async def _run(aiki: AikiHarness, key: str) -> dict[str, Any]:
    handle = await numbers_v1.start(aiki.client, key)
    return await handle.result()


@pytest.mark.parametrize("timeout", [0, 0.05, timedelta(milliseconds=50)], ids=["int", "float", "timedelta"])
async def test_wait_for_status_takes_seconds_as_a_number_or_a_timedelta(aiki: AikiHarness, timeout: Any) -> None:
    # No worker serves the version: the run stays queued and the wait times out.
    handle = await handle_v1.start(aiki.client, new_key())
    with pytest.raises(WaitTimeoutError):
        await asyncio.wait_for(handle.wait_for_status("completed", timeout=timeout), WAIT.total_seconds())


@pytest.mark.parametrize("timeout", ["30", True, [1]], ids=["str", "bool", "list"])
async def test_wait_for_status_refuses_other_timeouts_naming_the_argument(aiki: AikiHarness, timeout: Any) -> None:
    handle = await handle_v1.start(aiki.client, new_key())
    with pytest.raises(TypeError, match="timeout"):
        await handle.wait_for_status("completed", timeout=timeout)


async def test_cancel_is_idempotent_and_refused_for_a_run_that_ended_otherwise(aiki: AikiHarness) -> None:
    handle = await handle_v1.start(aiki.client, new_key())
    first = await handle.cancel("no longer needed")
    assert first.status == "cancelled"
    again = await handle.cancel("twice")
    assert again.status == "cancelled"
    assert (again.revision, again.error) == (first.revision, first.error)  # nothing changed
    assert [h.to_status for h in await aiki.client.history(handle.id)].count("cancelled") == 1

    await aiki.worker([handle_v1])
    done = await handle_v1.start(aiki.client, key := new_key())
    assert await asyncio.wait_for(done.result(), WAIT.total_seconds()) == key
    with pytest.raises(InvalidTransitionError):
        await done.cancel()
    assert await done.status() == "completed"
