"""Cancel and pause reach a running execution at once (SPEC §3), not at its next heartbeat.

"Once a cancel or pause has committed, the run starts no new task, child or sleep; the executor
learns of it at once. A task running when its run is cancelled gets asyncio.CancelledError. Pause
takes effect at the next step boundary: a running task finishes and its result is recorded, so
pause/resume never runs a side effect twice."

Every test runs with a heartbeat interval of a minute, so that only the worker's watch
(``POST /workers/watch``) can make it in time, and each runs on both databases, once through the
in-process port and once over HTTP (a real uvicorn socket and ``client(url=...)``, writes batched).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from aiki import Client, InvalidTransitionError, Run, event, task, worker, workflow
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatRun,
    RecordTask,
    RegisterWorkerRequest,
    VersionRef,
    VersionSpec,
    WatchRequest,
)
from tests.conftest import AikiHarness

from .helpers import LEDGER, WAIT, new_key

HEARTBEAT = timedelta(seconds=60)
# How long a test waits for what must happen "at once": far below the heartbeat interval.
PROMPT_S = 5.0

ENTERED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}
CANCELLED: dict[str, asyncio.Event] = {}


def _events(*keys: str) -> None:
    for key in keys:
        ENTERED[key], RELEASE[key], CANCELLED[key] = asyncio.Event(), asyncio.Event(), asyncio.Event()


@task(name="pf-blocking")
async def blocking(key: str) -> str:
    """A side effect that runs until the test releases it; counts its starts, ends and cancels."""
    LEDGER.hit("pf-blocking", key)
    ENTERED[key].set()
    try:
        await RELEASE[key].wait()
    except asyncio.CancelledError:
        LEDGER.hit("pf-blocking-cancelled", key)
        CANCELLED[key].set()
        raise
    LEDGER.hit("pf-blocking-returned", key)
    return f"released {key}"


@task(name="pf-next")
async def next_step(key: str) -> str:
    LEDGER.hit("pf-next", key)
    return f"next {key}"


two_steps_wf = workflow(name="pf-two-steps")


@two_steps_wf.v("1.0.0")
async def two_steps_v1(run: Run, key: str) -> list[str]:
    first = await blocking.start(run, key)
    second = await next_step.start(run, key)
    return [first, second]


side_by_side_wf = workflow(name="pf-side-by-side")


@side_by_side_wf.v("1.0.0")
async def side_by_side_v1(run: Run, key: str) -> list[str]:
    both = await asyncio.gather(blocking.start(run, f"{key}-1"), blocking.start(run, f"{key}-2"))
    return [*both, await next_step.start(run, key)]


child_wf = workflow(name="pf-child")


@child_wf.v("1.0.0")
async def child_v1(run: Run, key: str) -> str:
    return await blocking.start(run, key)


parent_wf = workflow(name="pf-parent")


@parent_wf.v("1.0.0")
async def parent_v1(run: Run, key: str) -> str:
    child = await child_v1.start_as_child(run, f"{key}-child")
    await child.wait_for_status()
    return await next_step.start(run, key)


waiting_wf = workflow(name="pf-waiting")


@waiting_wf.v("1.0.0", events={"go": event()})
async def waiting_v1(run: Run, key: str) -> str:
    await run.events.go.wait()
    return await next_step.start(run, key)


napping_wf = workflow(name="pf-napping")


@napping_wf.v("1.0.0")
async def napping_v1(run: Run, key: str) -> str:
    await run.sleep(timedelta(seconds=20), name="nap")
    return await next_step.start(run, key)


leaf_wf = workflow(name="pf-leaf")


@leaf_wf.v("1.0.0")
async def leaf_v1(run: Run, key: str) -> str:
    return await next_step.start(run, key)


gated_wf = workflow(name="pf-gated")


@gated_wf.v("1.0.0", events={"go": event()})
async def gated_v1(run: Run, key: str) -> str:
    """Waits for the test (no task: nothing it writes can tell it of a pause), then starts new work."""
    ENTERED[key].set()
    await RELEASE[key].wait()
    what = key.split("-")[0]
    if what == "child":
        child = await leaf_v1.start_as_child(run, key)
        await child.wait_for_status()
    elif what == "sleep":
        await run.sleep(timedelta(milliseconds=10), name="nap")
    else:
        await run.events.go.wait(timeout=timedelta(milliseconds=10))
    return await next_step.start(run, f"{key}-after")


ALL = [two_steps_v1, side_by_side_v1, child_v1, parent_v1, waiting_v1, napping_v1, leaf_v1, gated_v1]


# ---------------------------------------------------------------------------------------------
# The two ways to the server: the in-process port, and HTTP through a real socket
# ---------------------------------------------------------------------------------------------


@dataclass
class Setup:
    aiki: AikiHarness
    client: Client
    """What the worker and the test use: the harness's, ``client(handler=...)`` or ``client(url=...)``
    (the ``transport`` fixture)."""

    watches: int = 0
    """How many watch requests the worker has sent."""

    async def worker(self, *, concurrency: int = 10, deaf: bool = False) -> Any:
        """Spawn a worker; ``deaf``: its watches never answer (it hears of nothing but by its writes)."""
        connection = connect(self.client)
        watch = connection.watch

        async def counted(request: Any) -> Any:
            self.watches += 1
            if deaf:
                await asyncio.Event().wait()
            return await watch(request)

        connection.watch = counted  # type: ignore[method-assign]
        handle = await worker(workflows=ALL, concurrency=concurrency).spawn(self.client)
        self.aiki._workers.append(handle)
        return handle


@pytest.fixture
async def setup(make_aiki: Any) -> Setup:
    options = {"heartbeat_interval": HEARTBEAT, "lease_ttl": 3 * HEARTBEAT, "sleep_hold_max": timedelta(seconds=30)}
    harness: AikiHarness = await make_aiki(**options)
    return Setup(harness, harness.client)


async def _until(condition: Callable[[], bool], what: str, timeout: float = PROMPT_S) -> None:
    """Wait (bounded) for a condition on in-process state the test cannot await directly."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)


async def _prompt(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), PROMPT_S)
    except TimeoutError:
        raise AssertionError(f"not within {PROMPT_S}s (heartbeat every {HEARTBEAT}): {what}") from None


async def _history_reasons(c: Client, run_id: str) -> list[str]:
    return [h.reason or "" for h in await c.history(run_id)]


async def _task_statuses(c: Client, run_id: str) -> dict[str, str]:
    detail = await c.run_detail(run_id)
    return {t.name + ":" + bytes(t.input).decode(): t.status for t in detail.tasks}


# ---------------------------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------------------------


async def test_cancel_reaches_a_running_task_at_once(setup: Setup) -> None:
    key = new_key()
    _events(key)
    w = await setup.worker()
    handle = await two_steps_v1.start(setup.client, key)
    await _prompt(ENTERED[key], "task A started")

    await handle.cancel("cancelled while A runs")
    await _prompt(CANCELLED[key], "task A got CancelledError")
    await handle.wait_for_status("cancelled", timeout=WAIT)
    await _until(lambda: w.in_flight == 0, "the execution ended")

    assert LEDGER.count("pf-blocking", key) == 1
    assert LEDGER.count("pf-blocking-cancelled", key) == 1
    assert LEDGER.count("pf-blocking-returned", key) == 0
    assert LEDGER.count("pf-next", key) == 0
    assert (await handle.describe()).status == "cancelled"


async def test_cancel_of_a_parent_reaches_its_child_s_running_task(setup: Setup) -> None:
    key = new_key()
    _events(f"{key}-child")
    w = await setup.worker()
    handle = await parent_v1.start(setup.client, key)
    # (How soon a new child is claimed is not the point here: issue 10, defect 2.)
    await asyncio.wait_for(ENTERED[f"{key}-child"].wait(), WAIT.total_seconds())
    await handle.wait_for_status("awaiting_child", timeout=WAIT)

    await handle.cancel("cancelled while its child runs")
    await _prompt(CANCELLED[f"{key}-child"], "the child's task got CancelledError")
    await _until(lambda: w.in_flight == 0, "every execution ended")

    assert (await handle.describe()).status == "cancelled"
    children = (await setup.client.run_detail(handle.id)).children
    assert [c.status for c in children] == ["cancelled"]
    assert LEDGER.count("pf-blocking", f"{key}-child") == 1
    assert LEDGER.count("pf-blocking-returned", f"{key}-child") == 0
    assert LEDGER.count("pf-next", key) == 0


async def test_cancel_during_a_held_sleep_ends_the_execution_at_once(setup: Setup) -> None:
    key = new_key()
    w = await setup.worker()
    handle = await napping_v1.start(setup.client, key)
    await handle.wait_for_status("sleeping", timeout=WAIT)
    # A 20 s sleep within the server's hold limit: the execution waits it out in memory.
    await _until(lambda: w.in_flight == 1, "the execution holds its sleep")

    await handle.cancel("cancelled while asleep")
    await _until(lambda: w.in_flight == 0, "the sleeping execution ended")
    assert (await handle.describe()).status == "cancelled"
    assert LEDGER.count("pf-next", key) == 0


async def test_cancel_during_an_event_wait_starts_nothing_afterwards(setup: Setup) -> None:
    key = new_key()
    w = await setup.worker()
    handle = await waiting_v1.start(setup.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)

    await handle.cancel("cancelled while waiting")
    with pytest.raises(InvalidTransitionError):
        await handle.events.go.send(None)
    await _until(lambda: w.in_flight == 0, "no execution")
    assert (await handle.describe()).status == "cancelled"
    assert LEDGER.count("pf-next", key) == 0


# ---------------------------------------------------------------------------------------------
# Pause
# ---------------------------------------------------------------------------------------------


async def test_pause_lets_the_running_task_finish_and_records_it_once(setup: Setup) -> None:
    key = new_key()
    _events(key)
    w = await setup.worker()
    handle = await two_steps_v1.start(setup.client, key)
    await _prompt(ENTERED[key], "task A started")

    paused = await handle.pause("paused while A runs")
    assert paused.status == "paused"
    RELEASE[key].set()
    # A finishes, its result is recorded, and the execution stops instead of starting B.
    await _until(lambda: w.in_flight == 0, "the execution stopped at its step boundary", timeout=WAIT.total_seconds())
    assert await _task_statuses(setup.client, handle.id) == {f'pf-blocking:"{key}"': "completed"}
    assert (await handle.describe()).status == "paused"
    assert any("step boundary" in r for r in await _history_reasons(setup.client, handle.id))
    assert LEDGER.count("pf-blocking-returned", key) == 1
    assert LEDGER.count("pf-blocking-cancelled", key) == 0
    assert LEDGER.count("pf-next", key) == 0

    resumed = await handle.resume()
    assert resumed.status == "queued"
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == [f"released {key}", f"next {key}"]
    assert LEDGER.count("pf-blocking", key) == 1  # the side effect ran exactly once
    assert LEDGER.count("pf-next", key) == 1


async def test_pause_waits_for_every_task_under_way(setup: Setup) -> None:
    key = new_key()
    one, two = f"{key}-1", f"{key}-2"
    _events(one, two)
    w = await setup.worker()
    handle = await side_by_side_v1.start(setup.client, key)
    await _prompt(ENTERED[one], "task 1 started")
    await _prompt(ENTERED[two], "task 2 started")

    await handle.pause("paused while two tasks run")
    RELEASE[one].set()

    async def first_recorded() -> None:
        while True:
            if (await _task_statuses(setup.client, handle.id)).get(f'pf-blocking:"{one}"') == "completed":
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(first_recorded(), WAIT.total_seconds())
    # Task 2 still runs: the execution has not stopped, and does not cancel it.
    assert w.in_flight == 1
    assert LEDGER.count("pf-blocking-cancelled", two) == 0

    RELEASE[two].set()
    await _until(lambda: w.in_flight == 0, "the execution stopped at its step boundary", timeout=WAIT.total_seconds())
    statuses = await _task_statuses(setup.client, handle.id)
    assert statuses == {f'pf-blocking:"{one}"': "completed", f'pf-blocking:"{two}"': "completed"}
    assert LEDGER.count("pf-next", key) == 0

    await handle.resume()
    await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert [LEDGER.count("pf-blocking", k) for k in (one, two)] == [1, 1]
    assert LEDGER.count("pf-next", key) == 1
    # A watch answered "paused" is not asked again about that pause (it would spin until task 2 ends).
    assert setup.watches < 10


async def test_resume_before_the_step_boundary_lets_the_execution_go_on(setup: Setup) -> None:
    key = new_key()
    _events(key)
    w = await setup.worker()
    handle = await two_steps_v1.start(setup.client, key)
    await _prompt(ENTERED[key], "task A started")

    await handle.pause()
    # The executor hears of the pause while A still runs (its watch, not a heartbeat) ...
    await _until(lambda: any(e.pause_requested for e, _ in w._executions.values()), "the executor heard of it")
    resumed = await handle.resume()
    assert resumed.status == "running"  # ... and of the resume at its boundary: it goes on
    RELEASE[key].set()

    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == [f"released {key}", f"next {key}"]
    assert LEDGER.count("pf-blocking", key) == 1
    assert LEDGER.count("pf-next", key) == 1
    assert not any("step boundary" in r for r in await _history_reasons(setup.client, handle.id))


async def test_cancel_of_a_pausing_run_reaches_its_running_task_at_once(setup: Setup) -> None:
    key = new_key()
    _events(key)
    w = await setup.worker()
    handle = await two_steps_v1.start(setup.client, key)
    await _prompt(ENTERED[key], "task A started")
    await handle.pause()
    await _until(lambda: any(e.pause_requested for e, _ in w._executions.values()), "the executor heard of the pause")

    await handle.cancel("cancelled while pausing")
    await _prompt(CANCELLED[key], "task A got CancelledError")
    await _until(lambda: w.in_flight == 0, "the execution ended")
    assert (await handle.describe()).status == "cancelled"
    assert LEDGER.count("pf-blocking-returned", key) == 0
    assert LEDGER.count("pf-next", key) == 0


@pytest.mark.parametrize("what", ["child", "sleep", "event"])
async def test_new_work_started_after_an_unheard_pause_stops_at_that_boundary(setup: Setup, what: str) -> None:
    """The executor starts a child, a sleep or an event wait before it hears of a pause: nothing
    new starts, and it yields there (the run is released at once, not after a lease TTL)."""
    key = f"{what}-{new_key()}"
    _events(key)
    w = await setup.worker(deaf=True)
    handle = await gated_v1.start(setup.client, key)
    await _prompt(ENTERED[key], "the workflow is waiting for the test")
    [(execution, _)] = w._executions.values()
    held = execution.revision
    await handle.pause("paused before the new work")
    RELEASE[key].set()

    await _until(lambda: w.in_flight == 0, "the execution stopped at its step boundary")
    view = await handle.describe()
    assert view.status == "paused"
    assert any("step boundary" in r for r in await _history_reasons(setup.client, handle.id))
    async with setup.aiki.server.services.db.autocommit() as conn:
        row = await conn.fetchrow("SELECT lease_owner, revision FROM runs WHERE id = $1", handle.id)
    assert row["lease_owner"] is None  # released: a resume queues it now
    assert row["revision"] == held + 1
    assert (await setup.client.run_detail(handle.id)).children == []
    assert LEDGER.count("pf-next", key) == 0

    await handle.resume()
    assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == f"next {key}-after"
    assert LEDGER.count("pf-next", key) == (1 if what == "child" else 0)


# ---------------------------------------------------------------------------------------------
# The wire: watch, heartbeat and task records of a pausing run
# ---------------------------------------------------------------------------------------------


async def test_the_watch_heartbeat_and_records_of_a_pausing_run(setup: Setup) -> None:
    c, key = setup.client, new_key()
    worker_id = f"pf-watcher-{key}"
    spec = VersionSpec("pf-two-steps", "1.0.0")
    await connect(c).register_worker(RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[spec]))
    handle = await two_steps_v1.start(c, key)
    refs = [VersionRef("pf-two-steps", "1.0.0")]
    [claimed] = (
        await connect(c).claim(ClaimRequest(worker_id=worker_id, versions=refs, max_runs=1, wait_ms=5000))
    ).activations
    runs = [HeartbeatRun(claimed.run_id, claimed.revision)]

    # A watch parks while nothing happens to its runs, and answers a pause at once.
    watching = asyncio.create_task(connect(c).watch(WatchRequest(worker_id=worker_id, runs=runs, wait_ms=30_000)))
    await handle.pause()
    answer = await asyncio.wait_for(watching, PROMPT_S)
    assert (answer.stale, answer.paused) == ([], [handle.id])

    # The run is still held by its executor: alive for a heartbeat, a task record is accepted.
    beat = await connect(c).heartbeat(HeartbeatRequest(worker_id=worker_id, runs=runs))
    assert (beat.stale, beat.paused) == ([], [handle.id])
    record = RecordTask(
        run_id=handle.id,
        revision=claimed.revision,
        address="pf-blocking:x",
        seq=0,
        name="pf-blocking",
        status="completed",
        attempts=1,
        input=key,
        output="done",
    )
    [result] = await connect(c).run_commands([record])
    recorded = result.record
    assert recorded is not None
    assert recorded.recorded
    assert recorded.paused

    # A pause the worker already knows of is not answered again; a cancel is, at once.
    request = WatchRequest(worker_id=worker_id, runs=runs, wait_ms=30_000, pausing=[handle.id])
    watching = asyncio.create_task(connect(c).watch(request))
    await handle.cancel()
    answer = await asyncio.wait_for(watching, PROMPT_S)
    assert (answer.stale, answer.paused) == ([handle.id], [])


async def test_a_newer_watch_of_a_worker_ends_the_older_one(setup: Setup) -> None:
    c, key = setup.client, new_key()
    worker_id = f"pf-watcher-{key}"
    spec = VersionSpec("pf-two-steps", "1.0.0")
    await connect(c).register_worker(RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[spec]))
    await two_steps_v1.start(c, key)
    refs = [VersionRef("pf-two-steps", "1.0.0")]
    [claimed] = (
        await connect(c).claim(ClaimRequest(worker_id=worker_id, versions=refs, max_runs=1, wait_ms=5000))
    ).activations
    request = WatchRequest(worker_id=worker_id, runs=[HeartbeatRun(claimed.run_id, claimed.revision)], wait_ms=30_000)
    hub = setup.aiki.server.services.hub
    key_of_worker = f"watch:{DEFAULT_NAMESPACE_ID}:{worker_id}"

    first = asyncio.create_task(connect(c).watch(request))
    await _until(lambda: hub.waiting(key_of_worker) == 1, "the first watch is parked")
    second = asyncio.create_task(connect(c).watch(request))
    answer = await asyncio.wait_for(first, PROMPT_S)
    assert (answer.stale, answer.paused) == ([], [])
    await _until(lambda: hub.waiting(key_of_worker) == 1, "the second watch is parked")
    assert not second.done()
    second.cancel()
