"""The Aiki workflows of the cross-process scenarios, served by an `aiki worker` process.

    python -m aiki.cli worker bench.systems.remote_workflows_aiki:WORKFLOWS --url http://127.0.0.1:PORT

Timestamps are wall-clock `time.time_ns()` taken inside tasks (comparable across processes on one
machine) and returned as outputs, so the harness reads them from the run's result.
"""

import time
from datetime import timedelta

from aiki import Run, event, task, workflow

SLEEP_MS = 50


@task(name="step-1")
async def step1(x: int) -> int:
    return x + 1


@task(name="step-2")
async def step2(x: int) -> int:
    return x + 1


@task(name="step-3")
async def step3(x: int) -> int:
    return x + 1


@task(name="clock")
async def clock(label: str) -> int:
    return time.time_ns()


three_wf = workflow(name="bench-3-tasks")


@three_wf.v("1.0.0")
async def three_tasks(run: Run, input: int) -> int:
    a = await step1.start(run, input)
    b = await step2.start(run, a)
    return await step3.start(run, b)


pickup_wf = workflow(name="bench-pickup")


@pickup_wf.v("1.0.0")
async def pickup(run: Run, input: int) -> int:
    """Returns when its first task started."""
    return await clock.start(run, f"first-{input}")


event_wf = workflow(name="bench-event")


@event_wf.v("1.0.0", events={"go": event()})
async def event_resume(run: Run, input: int) -> int:
    """Waits for `go`; returns when the task after the wait started."""
    got = await run.events.go.wait(timeout=timedelta(minutes=5))
    if got.timeout:
        raise RuntimeError("no go event")
    return await clock.start(run, f"after-{input}")


sleep_wf = workflow(name="bench-sleep")


@sleep_wf.v("1.0.0")
async def sleep_overshoot(run: Run, input: int) -> list[int]:
    """Clock, 50 ms durable sleep, clock: the gap minus 50 ms is the overshoot."""
    before = await clock.start(run, f"before-{input}")
    await run.sleep(timedelta(milliseconds=SLEEP_MS), name="nap")
    after = await clock.start(run, f"after-{input}")
    return [before, after]


event_pair_wf = workflow(name="bench-event-pair")


@event_pair_wf.v("1.0.0", events={"first": event(), "second": event()})
async def event_pair(run: Run, input: int) -> int:
    """Waits for `first`, runs a task, waits for `second`: the harness sends both back to back,
    so the second arrives while the first has just made the run claimable again."""
    await run.events.first.wait(timeout=timedelta(minutes=5))
    await step1.start(run, input)
    await run.events.second.wait(timeout=timedelta(minutes=5))
    return input


CHAIN_CHILDREN = 5

chain_leaf_wf = workflow(name="bench-chain-leaf")


@chain_leaf_wf.v("1.0.0")
async def chain_leaf(run: Run, input: int) -> int:
    return await step1.start(run, input)


chain_wf = workflow(name="bench-chain")


@chain_wf.v("1.0.0")
async def chain_parent(run: Run, input: int) -> list[str]:
    """Starts CHAIN_CHILDREN children one after another, each awaited; returns their run ids."""
    ids = []
    for i in range(CHAIN_CHILDREN):
        child = await chain_leaf.start_as_child(run, input * CHAIN_CHILDREN + i)
        await child.wait_for_status("completed", timeout=timedelta(minutes=5))
        ids.append(child.id)
    return ids


WORKFLOWS = [three_tasks, pickup, event_resume, sleep_overshoot, event_pair, chain_leaf, chain_parent]
