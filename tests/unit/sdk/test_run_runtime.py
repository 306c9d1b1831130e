"""``Run`` and its handles delegate to the ``_runtime.Runtime`` protocol, not to the engine: a fake
runtime drives a workflow handler with no execution, no client and no server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from aiki.worker_sdk import ChildHandle, ChildResult, EventResult, Run, SleepResult, event, task, workflow
from aiki.worker_sdk._runtime import Runtime
from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.protocol import Activation, ChildRecord
from aiki.worker_sdk.tasks import Task

NULL = msgspec.Raw(b"null")


class _State:
    replaying = False


class FakeRuntime:
    """Answers every operation at once and records the calls it got."""

    def __init__(self) -> None:
        self.activation = Activation(
            run_id="r1", revision=1, workflow="orders", version="1", attempt=2, input=NULL, lease_ttl_ms=1000
        )
        self.state = _State()
        self.calls: list[tuple[Any, ...]] = []

    async def call_task(self, task: Task[Any, Any], input: Any) -> Any:
        self.calls.append(("task", task.name, input))
        return task(input)

    async def sleep(self, duration: timedelta, name: str) -> SleepResult:
        self.calls.append(("sleep", duration, name))
        return SleepResult()

    async def wait_event(self, name: str, type: Any, timeout: timedelta | None) -> EventResult[Any]:
        self.calls.append(("event", name, type, timeout))
        return EventResult(data=True)

    async def start_child(self, version: WorkflowVersion[Any, Any], input: Any) -> ChildHandle[Any]:
        self.calls.append(("child", f"{version.name}@{version.version}", input))
        record = ChildRecord("a", 0, "c1", version.name, version.version, "running", NULL)
        return ChildHandle(self, record, version.output_type)

    async def wait_child(self, child_id: str, output_type: Any, timeout: timedelta | None) -> ChildResult[Any]:
        self.calls.append(("wait_child", child_id, timeout))
        return ChildResult(status="completed", output=7)


@task()
def add_one(n: int) -> int:
    return n + 1


shipping = workflow("shipping")


@shipping.v("1")
async def shipping_v1(run: Run, n: int) -> int:
    return n


orders = workflow("orders")


@orders.v("1", events={"approved": event(bool)})
async def orders_v1(run: Run, n: int) -> int:
    m = await add_one.start(run, n)
    await run.sleep(timedelta(seconds=3), name="cool")
    approved = await run.events.approved.wait(timeout=5)
    child = await shipping_v1.start_as_child(run, m)
    done = await child.wait_for_status("completed", timeout=timedelta(minutes=1))
    assert approved.data is True
    assert done.output is not None
    return m + done.output


def test_the_fake_is_a_runtime() -> None:
    runtime: Runtime = FakeRuntime()  # `mypy --strict` on this file checks that the fake fits the protocol
    assert runtime.activation.run_id == "r1"


async def test_a_workflow_runs_over_any_runtime() -> None:
    runtime = FakeRuntime()
    run = Run(runtime, {"approved": bool})
    assert (run.id, run.attempt, run.workflow, run.version) == ("r1", 2, "orders", "1")
    assert await orders_v1.fn(run, 1) == 9
    assert runtime.calls == [
        ("task", "add_one", 1),
        ("sleep", timedelta(seconds=3), "cool"),
        ("event", "approved", bool, timedelta(seconds=5)),
        ("child", "shipping@1", 2),
        ("wait_child", "c1", timedelta(minutes=1)),
    ]


async def test_handles_check_their_arguments_before_reaching_the_runtime() -> None:
    runtime = FakeRuntime()
    run = Run(runtime, {"approved": bool})
    with pytest.raises(AttributeError, match="declares no event 'shipped'"):
        run.events.shipped  # noqa: B018
    with pytest.raises(TypeError):
        await run.events.approved.wait(timeout="soon")  # type: ignore[arg-type]
    child = await shipping_v1.start_as_child(run, 1)
    with pytest.raises(ValueError, match="terminal statuses"):
        await child.wait_for_status("running")
    assert [c[0] for c in runtime.calls] == ["child"]


def test_replaying_is_the_runtime_s() -> None:
    runtime = FakeRuntime()
    run = Run(runtime, {})
    assert not run.replaying
    runtime.state.replaying = True
    assert run.replaying
