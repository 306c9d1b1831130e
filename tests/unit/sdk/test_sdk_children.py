"""Child workflows in the replay engine: memoized starts, non-determinism, waits and their outcomes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from aiki.worker_sdk import Run, workflow
from aiki.worker_sdk._execution import Execution
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import Activation, ChildRecord, ErrorInfo, WaitTimeoutRecord
from aiki.worker_sdk.serde import canonical, task_address

NULL = msgspec.Raw(b"null")

report_wf = workflow("report")


@report_wf.v("1")
async def report_v1(run: Run, n: int) -> str:
    return f"report {n}"


parent_wf = workflow("parent")


@parent_wf.v("1")
async def parent_v1(run: Run, n: int) -> dict[str, Any]:
    child = await report_v1.start_as_child(run, n)
    result = await child.wait_for_status("completed")
    return {"id": child.id, "status": result.status, "output": result.output, "timeout": result.timeout}


def as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def child_address(n: int) -> str:
    return task_address("child:report@1", canonical(n))


def child(n: int, status: str = "queued", output: Any = None, run_id: str = "child-1", seq: int = 0) -> ChildRecord:
    return ChildRecord(
        address=child_address(n),
        seq=seq,
        run_id=run_id,
        workflow="report",
        version="1",
        status=status,  # type: ignore[arg-type]
        output=msgspec.Raw(msgspec.json.encode(output)),
        error=ErrorInfo(type="ValueError", message="bad") if status == "failed" else None,
    )


def activation(n: int, **kw: Any) -> Activation:
    return Activation(
        run_id="parent-1",
        revision=3,
        workflow="parent",
        version="1",
        attempt=1,
        input=msgspec.Raw(msgspec.json.encode(n)),
        lease_ttl_ms=30000,
        **kw,
    )


async def execute(fake_client: Any, act: Activation) -> None:
    await Execution(connect(fake_client), parent_v1, act, retry_budget=0.1).execute()


def child_starts(fake: Any) -> list[Any]:
    return [command for command in fake.sent() if command["kind"] == "start_child"]


async def test_a_new_child_is_started_fenced_and_the_parent_suspends_on_it(fake: Any, fake_client: Any) -> None:
    started = child(5)
    fake.commands["start_child"] = lambda _: {"child": {"child": as_json(started), "created": True}}
    await execute(fake_client, activation(5))
    [start] = child_starts(fake)
    assert start["revision"] == 3
    assert (start["address"], start["seq"]) == (child_address(5), 0)
    assert (start["workflow"], start["version"], start["input"]) == ("report", "1", 5)
    [wait] = fake.writes("transition")
    assert wait["kind"] == "await_child"
    assert wait["child_run_id"] == "child-1"
    assert wait["wait_seq"] == 0


async def test_replay_returns_the_recorded_child_and_its_output(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, activation(5, children=[child(5, "completed", "report 5")]))
    assert child_starts(fake) == []
    [done] = fake.writes("transition")
    assert done["kind"] == "complete"
    assert done["output"] == {"id": "child-1", "status": "completed", "output": "report 5", "timeout": False}


async def test_a_failed_child_wakes_the_wait_with_its_status(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, activation(5, children=[child(5, "failed")]))
    [done] = fake.writes("transition")
    assert done["output"]["status"] == "failed"
    assert done["output"]["output"] is None


async def test_a_recorded_wait_timeout_replays_as_timeout(fake: Any, fake_client: Any) -> None:
    act = activation(
        5, children=[child(5, "completed", "late")], wait_timeouts=[WaitTimeoutRecord("@child:child-1", 0)]
    )
    await execute(fake_client, act)
    [done] = fake.writes("transition")
    assert done["output"]["timeout"] is True
    assert done["output"]["status"] is None


async def test_a_child_started_with_another_input_is_non_determinism(fake: Any, fake_client: Any) -> None:
    # History holds the child of input 4; the code now starts one with input 5.
    await execute(fake_client, activation(5, children=[child(4, "running")]))
    assert child_starts(fake) == []
    [failed] = fake.writes("transition")
    assert failed["kind"] == "fail"
    assert failed["error"]["type"] == "NonDeterminismError"
    assert child_address(4) in failed["error"]["message"]


async def test_the_server_answering_that_the_child_already_ended_resumes_at_once(fake: Any, fake_client: Any) -> None:
    ended = child(5, "completed", "quick")

    fake.commands["await_child"] = lambda _: {
        "transition": {"status": "running", "suspended": False, "child": as_json(ended)}
    }
    await execute(fake_client, activation(5, children=[child(5, "running")]))
    kinds = [w["kind"] for w in fake.writes("transition")]
    assert kinds == ["await_child", "complete"]
    assert fake.writes("transition")[-1]["output"]["output"] == "quick"


only_terminal_wf = workflow("only-terminal")


@only_terminal_wf.v("1")
async def only_terminal_v1(run: Run) -> None:
    c = await report_v1.start_as_child(run, 1)
    await c.wait_for_status("running")


async def test_waiting_for_a_non_terminal_status_is_refused(fake: Any, fake_client: Any) -> None:
    act = activation(0, children=[child(1, "running")])
    act.workflow = "only-terminal"
    await Execution(connect(fake_client), only_terminal_v1, act, retry_budget=0.1).execute()
    [failed] = fake.writes("transition")
    assert failed["kind"] == "fail"
    assert "terminal statuses" in failed["error"]["message"]


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_child_result_completed_flag(status: str) -> None:
    from aiki.worker_sdk import ChildResult

    assert ChildResult(status=status).completed is (status == "completed")
