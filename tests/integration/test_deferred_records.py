"""A completed task's record travels with the execution's next write when that write comes at once,
and is durable before any later work starts. Embedded (local port) and HTTP, both databases
(the ``aiki`` fixture's matrix)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from aiki import Run, task, worker, workflow
from aiki.worker_sdk._run_writer import raise_problems
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.errors import StaleRevisionError, TaskConflictError
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    Command,
    CommandResult,
    Complete,
    RecordTask,
    RegisterWorkerRequest,
    VersionRef,
    VersionSpec,
)

from .helpers import API, LEDGER, WAIT, new_key


class WriteLog:
    """Wraps a client's write pipeline and remembers what each write (one run's group of commands) carried."""

    def __init__(self, c: Client) -> None:
        self.calls: list[tuple[str, str]] = []  # (kind, task name or transition kind)
        pipeline = connect(c).pipeline
        send = pipeline.send

        async def logged_send(commands: Sequence[Command]) -> list[CommandResult]:
            *carried, last = commands
            if isinstance(last, RecordTask) and not carried:
                self.calls.append(("record", last.name))
            else:
                names = [f"+{c.name}" for c in carried if isinstance(c, RecordTask)]
                kind = last.__struct_config__.tag
                self.calls.append(("transition", kind + "".join(names)))
            return await send(commands)

        pipeline.send = logged_send  # type: ignore[method-assign]


@pytest.fixture
def wclient(aiki: Any) -> Client:
    """The client a worker uses: the harness's, so the local port or HTTP on loopback (batched)."""
    c: Client = aiki.client
    return c


@task(name="defer-step")
async def defer_step(value: list[Any]) -> int:
    LEDGER.hit("defer-step", value[0])
    n: int = value[1]
    return n + 1


defer_wf = workflow(name="defer-three")


@defer_wf.v("1.0.0")
async def defer_v1(run: Run, key: str) -> int:
    n = await defer_step.start(run, [key, 0])
    n = await defer_step.start(run, [key, n])
    return await defer_step.start(run, [key, n])


async def test_the_last_record_travels_with_the_completion(aiki: Any, wclient: Client) -> None:
    log = WriteLog(wclient)
    w = await worker(workflows=[defer_v1], worker_id=f"defer-{new_key()}").spawn(wclient)
    try:
        key = new_key()
        handle = await defer_v1.start(aiki.client, key)
        assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == 3
    finally:
        await w.stop()
    assert log.calls == [("record", "defer-step"), ("record", "defer-step"), ("transition", "complete+defer-step")]
    detail = (await aiki.http.get(f"{API}/runs/{handle.id}/detail")).json()
    assert [(t["seq"], t["status"]) for t in detail["tasks"]] == [(0, "completed")] * 3
    assert LEDGER.count("defer-step", key) == 3


durable_wf = workflow(name="defer-durable")
SEEN: dict[str, list[int]] = {}
HTTP: dict[str, Any] = {}  # key -> an HTTP client of the test's server, for the task to read with


@task(name="defer-look")
async def defer_look(value: list[Any]) -> int:
    """Reads, from the server, how many task entries of its run are recorded when it starts."""
    key, run_id = value
    detail = (await HTTP[key].get(f"{API}/runs/{run_id}/detail")).json()
    SEEN.setdefault(key, []).append(sum(t["status"] == "completed" for t in detail["tasks"]))
    return 0


@durable_wf.v("1.0.0")
async def durable_v1(run: Run, key: str) -> int:
    await defer_step.start(run, [key, 0])
    await defer_look.start(run, [key, run.id])
    await defer_step.start(run, [key, 1])
    await defer_look.start(run, [key, run.id])
    return 0


async def test_a_record_is_durable_before_the_next_task_starts(aiki: Any, wclient: Client) -> None:
    key = new_key()
    HTTP[key] = aiki.http
    w = await worker(workflows=[durable_v1], worker_id=f"durable-{new_key()}").spawn(wclient)
    try:
        handle = await durable_v1.start(aiki.client, key)
        await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    finally:
        await w.stop()
    # Each look saw every task before it recorded: 1, then 3 (step, look, step).
    assert SEEN[key] == [1, 3]


parallel_wf = workflow(name="defer-parallel")
SLOW_STARTED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}


@task(name="defer-quick")
async def defer_quick(key: str) -> int:
    # Ends only once its sibling runs: nothing else the workflow does can carry its record.
    await SLOW_STARTED[key].wait()
    return 11


@task(name="defer-blocked")
async def defer_blocked(key: str) -> str:
    SLOW_STARTED[key].set()
    await RELEASE[key].wait()
    return "released"


@parallel_wf.v("1.0.0")
async def parallel_v1(run: Run, key: str) -> list[Any]:
    return list(await asyncio.gather(defer_quick.start(run, key), defer_blocked.start(run, key)))


async def test_a_record_does_not_wait_for_a_sibling_task(aiki: Any, wclient: Client) -> None:
    key = new_key()
    SLOW_STARTED[key], RELEASE[key] = asyncio.Event(), asyncio.Event()
    w = await worker(workflows=[parallel_v1], worker_id=f"parallel-{new_key()}").spawn(wclient)
    try:
        handle = await parallel_v1.start(aiki.client, key)

        async def quick_recorded() -> None:
            while True:
                detail = (await aiki.http.get(f"{API}/runs/{handle.id}/detail")).json()
                if any(t["name"] == "defer-quick" for t in detail["tasks"]):
                    return
                await asyncio.sleep(0.01)

        # The quick task's record is written while its sibling is still blocked.
        await asyncio.wait_for(quick_recorded(), WAIT.total_seconds())
        assert await handle.status() == "running"
        RELEASE[key].set()
        assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == [11, "released"]
    finally:
        RELEASE[key].set()
        await w.stop()


big_wf = workflow(name="defer-big")


@task(name="defer-big-step")
async def defer_big_step(n: int) -> str:
    return "x" * n


@big_wf.v("1.0.0")
async def big_v1(run: Run, n: int) -> int:
    return len(await defer_big_step.start(run, n))


async def test_a_large_record_is_sent_on_its_own(aiki: Any, wclient: Client) -> None:
    log = WriteLog(wclient)
    w = await worker(workflows=[big_v1], worker_id=f"big-{new_key()}").spawn(wclient)
    try:
        # The harness allows 64 KiB per request; a record over a quarter of that is not deferred.
        small = await big_v1.start(aiki.client, 1000)
        assert await asyncio.wait_for(small.result(), WAIT.total_seconds()) == 1000
        large = await big_v1.start(aiki.client, 40 * 1024)
        assert await asyncio.wait_for(large.result(), WAIT.total_seconds()) == 40 * 1024
    finally:
        await w.stop()
    assert Counter(log.calls) == {
        ("transition", "complete+defer-big-step"): 1,  # the small one travelled with its completion
        ("record", "defer-big-step"): 1,  # the large one went first, on its own
        ("transition", "complete"): 1,
    }


# -- a completion carrying its last record: one write, with the record's own rules ---------------


async def _claimed_defer_run(aiki: Any) -> Any:
    """A ``defer-three`` run claimed by a registered (idle) worker id: its activation."""
    worker_id = f"defer-claimer-{new_key()}"
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[VersionSpec("defer-three", "1.0.0")])
    )
    handle = await defer_v1.start(aiki.client, new_key())
    claim = await connect(aiki.client).claim(
        ClaimRequest(worker_id=worker_id, versions=[VersionRef("defer-three", "1.0.0")], max_runs=1, wait_ms=5000)
    )
    [activation] = claim.activations
    assert activation.run_id == handle.id
    return activation


def _step(act: Any, output: int, *, revision: int | None = None, attempts: int = 1) -> RecordTask:
    return RecordTask(
        run_id=act.run_id,
        revision=act.revision if revision is None else revision,
        address="defer-step:x",
        seq=0,
        name="defer-step",
        status="completed",
        attempts=attempts,
        output=output,
    )


def _complete(act: Any, output: int, *, revision: int | None = None) -> Complete:
    return Complete(run_id=act.run_id, revision=act.revision if revision is None else revision, output=output)


async def _write(aiki: Any, *commands: Command) -> list[CommandResult]:
    """Send ``commands`` together through the pipeline; raise the first refusal as the execution would."""
    results = await connect(aiki.client).run_commands(commands)
    raise_problems(results)
    return results


async def _state(aiki: Any, run_id: str) -> tuple[str, list[tuple[int, str, Any]]]:
    detail = (await aiki.http.get(f"{API}/runs/{run_id}/detail")).json()
    return detail["run"]["status"], [(t["seq"], t["status"], t["output"]) for t in detail["tasks"]]


async def test_a_carried_record_and_its_completion_are_written_together(aiki: Any) -> None:
    act = await _claimed_defer_run(aiki)
    record, answer = await _write(aiki, _step(act, 6), _complete(act, 7))
    assert record.record is not None
    assert record.record.recorded
    assert answer.transition is not None
    assert answer.transition.status == "completed"
    assert await _state(aiki, act.run_id) == ("completed", [(0, "completed", 6)])


async def test_a_carried_record_that_conflicts_refuses_the_completion(aiki: Any) -> None:
    act = await _claimed_defer_run(aiki)
    await _write(aiki, _step(act, 6))
    # Another outcome for the same entry (a second attempt's) cannot be recorded over the first.
    late = _step(act, 8, attempts=2)
    results = await connect(aiki.client).run_commands([late, _complete(act, 7)])
    assert [r.problem.code if r.problem else None for r in results] == ["task_conflict", "task_conflict"]
    with pytest.raises(TaskConflictError) as refused:
        raise_problems(results)
    assert (refused.value.status, refused.value.code) == (409, "task_conflict")
    # Nothing moved: the run is still held and the first outcome stands.
    assert await _state(aiki, act.run_id) == ("running", [(0, "completed", 6)])
    # The same outcome again (a retried write) is accepted, and the completion goes through.
    _, answer = await _write(aiki, _step(act, 6), _complete(act, 7))
    assert answer.transition is not None
    assert answer.transition.status == "completed"
    assert await _state(aiki, act.run_id) == ("completed", [(0, "completed", 6)])


async def test_a_fenced_completion_writes_not_its_carried_record(aiki: Any) -> None:
    act = await _claimed_defer_run(aiki)
    stale = act.revision - 1
    with pytest.raises(StaleRevisionError):
        await _write(aiki, _step(act, 6, revision=stale), _complete(act, 7, revision=stale))
    assert await _state(aiki, act.run_id) == ("running", [])
