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


WORKFLOWS = [three_tasks, pickup, event_resume, sleep_overshoot]
