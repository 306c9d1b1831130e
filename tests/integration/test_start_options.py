"""Every start option reaches the server on every path (SPEC §2 "Start options"): client start,
child start and schedule, in process (local port) and over HTTP (``client(url=...)`` on a real
socket), on both databases. Options a path cannot honour are refused with an error naming them.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from aiki import ReferenceConflictError, RetryPolicy, Run, ValidationError, WorkflowNotFoundError, schedule, workflow
from aiki.worker_sdk.protocol import RunView
from tests.conftest import AikiHarness

from .helpers import WAIT, new_key

POOL = "opts-pool"
FAST_RETRY = RetryPolicy.fixed(max_attempts=2, delay=timedelta(milliseconds=20))


@pytest.fixture
async def aiki(make_aiki: Any) -> AikiHarness:
    harness: AikiHarness = await make_aiki(sleep_hold_max=timedelta(0))
    return harness


flaky_wf = workflow(name="opts-flaky")


@flaky_wf.v("1.0.0")
async def flaky_v1(run: Run, key: str) -> dict[str, Any]:
    """Fails its first attempt: it completes only if a retry policy reached its run."""
    if run.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return {"key": key, "attempt": run.attempt, "reference_id": run.reference_id}


parent_wf = workflow(name="opts-parent")


@parent_wf.v("1.0.0")
async def parent_v1(run: Run, key: str) -> dict[str, Any]:
    child = await flaky_v1.with_options(
        reference_id=f"child-{key}", delay=timedelta(milliseconds=200), retry=FAST_RETRY, pool=POOL
    ).start_as_child(run, key)
    result = await child.wait_for_status("completed", timeout=timedelta(minutes=1))
    return {"child": child.id, "status": result.status, "output": result.output}


dedup_wf = workflow(name="opts-dedup-parent")


@dedup_wf.v("1.0.0")
async def dedup_v1(run: Run, key: str) -> dict[str, Any]:
    retrying = flaky_v1.with_options(reference_id=f"dup-{key}", retry=FAST_RETRY)
    first = await retrying.start_as_child(run, key)
    # The same reference and input at another entry of the replay: the same child.
    again = await retrying.start_as_child(run, key)
    outcome: dict[str, Any] = {"first": first.id, "again": again.id}
    try:
        await retrying.start_as_child(run, key + "-other")
        outcome["other_input"] = "started"
    except ReferenceConflictError:
        outcome["other_input"] = "conflict"
    existing = await retrying.with_options(
        reference_id=f"dup-{key}", conflict="return_existing", retry=FAST_RETRY
    ).start_as_child(run, key + "-other")
    outcome["return_existing"] = existing.id
    try:
        # Named by a run a client started: a child cannot take it over.
        await flaky_v1.with_options(reference_id=f"client-{key}").start_as_child(run, key)
        outcome["foreign"] = "started"
    except ReferenceConflictError:
        outcome["foreign"] = "conflict"
    await first.wait_for_status("completed", timeout=timedelta(minutes=1))
    return outcome


async def _history_statuses(aiki: AikiHarness, run_id: str) -> list[str]:
    return [h.to_status for h in await aiki.client.history(run_id)]


async def test_child_start_carries_reference_delay_retry_and_pool(aiki: AikiHarness) -> None:
    key = new_key()
    # Only a worker of POOL runs the child: it lands there only if the pool option arrived.
    await aiki.worker([parent_v1])
    await aiki.worker([flaky_v1], pools=[POOL])
    handle = await parent_v1.start(aiki.client, key)
    output = await asyncio.wait_for(handle.result(), WAIT.total_seconds())

    assert output["status"] == "completed"
    # The child's first attempt failed: it completed because the retry policy reached it.
    assert output["output"] == {"key": key, "attempt": 2, "reference_id": f"child-{key}"}
    child: RunView = await aiki.client.get_run(output["child"])
    assert (child.reference_id, child.pool, child.parent_run_id) == (f"child-{key}", POOL, handle.id)
    # Delayed: it was scheduled before it was queued.
    assert (await _history_statuses(aiki, child.id))[:2] == ["scheduled", "queued"]

    # The reference finds the child, and a client start with it returns the child: no second run.
    found = await flaky_v1.get_handle_by_reference(aiki.client, f"child-{key}")
    assert found.id == child.id
    again = await flaky_v1.with_options(reference_id=f"child-{key}").start(aiki.client, key)
    assert again.id == child.id
    with pytest.raises(ReferenceConflictError):
        await flaky_v1.with_options(reference_id=f"child-{key}").start(aiki.client, key + "-other")
    page = await aiki.client.list_runs(workflow="opts-flaky", reference_id=f"child-{key}")
    assert [r.id for r in page.items] == [child.id]


async def test_child_reference_deduplicates_within_the_parent_and_stays_deterministic(aiki: AikiHarness) -> None:
    key = new_key()
    client_run = await flaky_v1.with_options(reference_id=f"client-{key}", retry=FAST_RETRY).start(aiki.client, key)
    await aiki.worker([dedup_v1, flaky_v1])
    handle = await dedup_v1.start(aiki.client, key)
    # The parent suspends on the child and is replayed: the children it gets stay the same.
    output = await asyncio.wait_for(handle.result(), WAIT.total_seconds())

    assert output["first"] == output["again"] == output["return_existing"]
    assert output["other_input"] == "conflict"
    assert output["foreign"] == "conflict"
    children = await aiki.client.list_runs(parent_run_id=handle.id)
    assert [c.id for c in children.items] == [output["first"]]
    await asyncio.wait_for(client_run.wait_for_status("completed"), WAIT.total_seconds())


async def _schedule_run(aiki: AikiHarness, schedule_id: str) -> RunView:
    deadline = time.monotonic() + WAIT.total_seconds()
    while True:
        page = await aiki.client.list_runs(schedule_id=schedule_id)
        if page.items:
            return page.items[-1]
        assert time.monotonic() < deadline, "the schedule started no run"
        await asyncio.sleep(0.05)


async def test_schedule_runs_get_the_versions_retry_and_pool(aiki: AikiHarness) -> None:
    key = new_key()
    await aiki.worker([flaky_v1], pools=[POOL])
    version = flaky_v1.with_options(retry=FAST_RETRY, pool=POOL)
    handle = await schedule(every=timedelta(seconds=1)).activate(aiki.client, version, key)
    try:
        described = await handle.describe()
        assert described.pool == POOL
        assert described.retry is not None
        assert described.retry.max_attempts == 2
        run = await _schedule_run(aiki, handle.id)
        assert run.pool == POOL
        ended = await asyncio.wait_for(
            flaky_v1._handle(aiki.client, run.id).wait_for_status("completed"), WAIT.total_seconds()
        )
        assert ended.attempt == 2  # retried: the policy reached the run
        # Activating the same rule without the options is another schedule (options are part of it).
        other = await schedule(every=timedelta(seconds=1)).activate(aiki.client, flaky_v1, key)
        assert other.id != handle.id
        assert other.created
        await other.delete()
    finally:
        await handle.delete()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"reference_id": "r"}, "reference_id"),
        ({"delay": timedelta(seconds=5)}, "delay"),
        ({"conflict": "return_existing"}, "conflict"),
    ],
    ids=["reference_id", "delay", "conflict"],
)
async def test_schedule_refuses_options_it_cannot_honour(
    aiki: AikiHarness, options: dict[str, Any], field: str
) -> None:
    await aiki.worker([flaky_v1])
    with pytest.raises(ValidationError) as info:
        await schedule(every=timedelta(hours=1)).activate(aiki.client, flaky_v1.with_options(**options), new_key())
    assert info.value.field == field
    assert field in str(info.value)
    listed = await aiki.client.request("GET", "/schedules", dict)
    assert listed["items"] == []


async def test_client_start_carries_every_option(aiki: AikiHarness) -> None:
    key = new_key()
    await aiki.worker([flaky_v1], pools=[POOL])
    version = flaky_v1.with_options(
        reference_id=f"client-{key}",
        delay=timedelta(milliseconds=200),
        retry=FAST_RETRY,
        pool=POOL,
        require_registered=True,
    )
    handle = await version.start(aiki.client, key)
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == {
        "key": key,
        "attempt": 2,
        "reference_id": f"client-{key}",
    }
    view = await handle.describe()
    assert (view.reference_id, view.pool) == (f"client-{key}", POOL)
    assert (await _history_statuses(aiki, handle.id))[:2] == ["scheduled", "queued"]
    assert (await version.start(aiki.client, key)).id == handle.id
    with pytest.raises(ReferenceConflictError):
        await version.start(aiki.client, key + "-other")
    other = await version.with_options(reference_id=f"client-{key}", conflict="return_existing").start(
        aiki.client, key + "-other"
    )
    assert other.id == handle.id


unserved_wf = workflow(name="opts-unserved")


@unserved_wf.v("1.0.0")
async def unserved_v1(run: Run, key: str) -> str:  # pragma: no cover - no worker serves it
    return key


strict_parent_wf = workflow(name="opts-strict-parent")


@strict_parent_wf.v("1.0.0")
async def strict_parent_v1(run: Run, key: str) -> dict[str, Any]:
    try:
        await unserved_v1.with_options(require_registered=True).start_as_child(run, key)
        strict = "started"
    except WorkflowNotFoundError:
        strict = "refused"
    child = await unserved_v1.start_as_child(run, key)
    return {"strict": strict, "child": child.id}


async def test_child_of_an_unregistered_version_waits_unless_registration_is_required(aiki: AikiHarness) -> None:
    await aiki.worker([strict_parent_v1])
    handle = await strict_parent_v1.start(aiki.client, new_key())
    output = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert output["strict"] == "refused"
    child = await aiki.client.get_run(output["child"])
    assert (child.status, child.parent_run_id) == ("queued", handle.id)
