"""Replay: address cursors, memoization, non-determinism detection, suspensions, outcomes."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from aiki.worker_sdk import RetryPolicy, Run, TaskFailedError, event, task, workflow
from aiki.worker_sdk._execution import Execution, now_ms
from aiki.worker_sdk._replay_state import TIMED_OUT, ReplayState
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import (
    Activation,
    ErrorInfo,
    EventRecord,
    SleepRecord,
    TaskRecord,
    WaitTimeoutRecord,
)
from aiki.worker_sdk.serde import canonical, task_address

NULL = msgspec.Raw(b"null")
calls: list[str] = []


@task(name="double")
async def double(n: int) -> int:
    calls.append(f"double({n})")
    return n * 2


@task(name="sync-upper")
def upper(s: str) -> str:
    calls.append(f"upper({s})")
    return s.upper()


flaky_failures = {"left": 0}


@task(name="flaky", retry=RetryPolicy.fixed(3, timedelta(seconds=30)))
async def flaky() -> str:
    if flaky_failures["left"] > 0:
        flaky_failures["left"] -= 1
        raise RuntimeError("boom")
    return "ok"


@task(name="broken")
async def broken() -> None:
    raise ValueError("nope")


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    flaky_failures["left"] = 0


def addr(name: str, value: Any) -> str:
    return task_address(name, canonical(value))


def done(name: str, value: Any, output: Any, seq: int = 0) -> TaskRecord:
    return TaskRecord(
        address=addr(name, value),
        seq=seq,
        name=name,
        status="completed",
        attempts=1,
        output=msgspec.Raw(msgspec.json.encode(output)),
    )


def activation(input: Any = None, **kw: Any) -> Activation:
    return Activation(
        run_id="run-1",
        revision=7,
        workflow="wf",
        version="1",
        attempt=kw.pop("attempt", 1),
        input=msgspec.Raw(msgspec.json.encode(input)),
        lease_ttl_ms=30000,
        **kw,
    )


async def execute(fake_client: Any, version: Any, act: Activation) -> Execution:
    execution = Execution(connect(fake_client), version, act, retry_budget=0.1)
    await execution.execute()
    return execution


wf = workflow("wf")


@wf.v("1")
async def sequential(run: Run, n: int) -> int:
    a = await double.start(run, n)
    b = await double.start(run, a)
    return b


# -- sans-IO state -----------------------------------------------------------------------------


def test_fifo_cursor_per_address() -> None:
    state = ReplayState(activation(tasks=[done("double", 1, 2, 0), done("double", 1, 2, 1)]))
    a = addr("double", 1)
    assert state.next_task(a)[0] == 0
    assert state.unconsumed()[0].seq == 1
    seq, record = state.next_task(a)
    assert (seq, record is not None) == (1, True)
    assert state.next_task(a) == (2, None)
    assert state.next_task(addr("double", 2)) == (0, None)
    assert state.unconsumed() == []


def test_discarded_entries_are_ignored() -> None:
    discarded = TaskRecord(
        address=addr("broken", None), seq=0, name="broken", status="discarded", attempts=1, output=NULL
    )
    state = ReplayState(activation(tasks=[discarded]))
    assert state.unconsumed() == []
    assert state.next_task(addr("broken", None)) == (0, None)


def test_sleep_and_wait_cursors() -> None:
    state = ReplayState(
        activation(
            sleeps=[SleepRecord(name="a", seq=0, status="completed", wake_at=1)],
            events=[
                EventRecord(id="e2", name="x", seq=1, data=msgspec.Raw(b"2")),
                EventRecord(id="e1", name="x", seq=0, data=msgspec.Raw(b"1")),
            ],
            wait_timeouts=[WaitTimeoutRecord(name="x", seq=1)],
        )
    )
    assert state.next_sleep("a")[1] is not None
    assert state.next_sleep("a") == (1, None)
    assert state.next_sleep("b") == (0, None)
    seq, ev = state.next_wait("x")
    assert seq == 0
    assert ev is not None
    assert ev.id == "e1"
    assert state.next_wait("x") == (1, TIMED_OUT)
    seq, ev = state.next_wait("x")
    assert seq == 2
    assert ev is not None
    assert ev.id == "e2"
    assert state.next_wait("x") == (3, None)
    assert state.consumed("x") == 2


# -- execution ---------------------------------------------------------------------------------


async def test_new_run_records_tasks_and_completes(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, sequential, activation(3))
    records = fake.writes("task")
    assert [(r["name"], r["seq"], r["status"], r["attempts"], r["output"]) for r in records] == [
        ("double", 0, "completed", 1, 6),
        ("double", 0, "completed", 1, 12),
    ]
    assert records[0]["address"] == addr("double", 3)
    assert records[0]["revision"] == 7
    assert fake.writes("transition") == [{"revision": 7, "kind": "complete", "output": 12}]


async def test_replay_returns_recorded_output_without_running(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, sequential, activation(3, tasks=[done("double", 3, 6), done("double", 6, 12)]))
    assert calls == []
    assert fake.writes("task") == []
    assert fake.writes("transition")[0]["output"] == 12


async def test_same_address_is_a_fifo(fake: Any, fake_client: Any) -> None:
    @wf.v("fifo")
    async def twice(run: Run) -> list[int]:
        return [await double.start(run, 1), await double.start(run, 1)]

    await execute(fake_client, twice, activation(tasks=[done("double", 1, 2)]))
    assert [r["seq"] for r in fake.writes("task")] == [1]
    assert calls == ["double(1)"]


async def test_inserted_task_is_non_deterministic(fake: Any, fake_client: Any) -> None:
    @wf.v("insert")
    async def inserted(run: Run) -> int:
        await double.start(run, 100)  # new, before recorded work
        return await double.start(run, 1)

    await execute(fake_client, inserted, activation(tasks=[done("double", 1, 2)]))
    assert calls == []
    assert fake.writes("task") == []
    [fail] = fake.writes("transition")
    assert fail["kind"] == "fail"
    assert fail["error"]["type"] == "NonDeterminismError"
    assert fail["error"]["code"] == "non_determinism"
    assert addr("double", 1) in fail["error"]["message"]


async def test_changed_input_is_non_deterministic_and_never_retried(fake: Any, fake_client: Any) -> None:
    @wf.v("changed", retry=RetryPolicy.fixed(5, timedelta(seconds=1)))
    async def changed(run: Run, n: int) -> int:
        return await double.start(run, n + 1)

    await execute(fake_client, changed, activation(3, tasks=[done("double", 3, 6)]))
    [fail] = fake.writes("transition")
    assert (fail["kind"], fail["error"]["type"]) == ("fail", "NonDeterminismError")


async def test_swallowed_non_determinism_still_fails(fake: Any, fake_client: Any) -> None:
    @wf.v("swallow")
    async def swallow(run: Run) -> None:
        with contextlib.suppress(Exception):
            await double.start(run, 100)

    await execute(fake_client, swallow, activation(tasks=[done("double", 1, 2)]))
    assert fake.writes("transition")[0]["error"]["type"] == "NonDeterminismError"


async def test_reorder_remove_append_are_safe(fake: Any, fake_client: Any) -> None:
    recorded = [done("double", 1, 2), done("double", 2, 4), done("sync-upper", "a", "A")]

    @wf.v("reorder")
    async def reordered(run: Run) -> list[Any]:
        return [await upper.start(run, "a"), await double.start(run, 2), await double.start(run, 1)]

    await execute(fake_client, reordered, activation(tasks=recorded))
    assert calls == []
    assert fake.writes("transition")[-1]["kind"] == "complete"

    fake.requests.clear()

    @wf.v("remove")
    async def removed(run: Run) -> int:
        return await double.start(run, 2)

    await execute(fake_client, removed, activation(tasks=recorded))
    assert fake.writes("transition")[-1] == {"revision": 7, "kind": "complete", "output": 4}

    fake.requests.clear()

    @wf.v("append")
    async def appended(run: Run) -> list[Any]:
        out: list[Any] = [await double.start(run, 1), await double.start(run, 2), await upper.start(run, "a")]
        out.append(await upper.start(run, "b"))
        return out

    await execute(fake_client, appended, activation(tasks=recorded))
    assert calls == ["upper(b)"]
    assert fake.writes("transition")[-1]["output"] == [2, 4, "A", "B"]


async def test_gather_siblings_consume_before_new_work(fake: Any, fake_client: Any) -> None:
    @wf.v("gather")
    async def fan_out(run: Run) -> list[int]:
        return list(await asyncio.gather(*(double.start(run, i) for i in range(4))))

    # Entries 2 and 3 are recorded, 0 and 1 are new: order in gather must not matter.
    await execute(fake_client, fan_out, activation(tasks=[done("double", 2, 4), done("double", 3, 6)]))
    assert sorted(calls) == ["double(0)", "double(1)"]
    assert fake.writes("transition")[-1]["output"] == [0, 2, 4, 6]


async def test_task_retry_suspends_then_runs_next_attempt(fake: Any, fake_client: Any) -> None:
    @wf.v("retry")
    async def retrying(run: Run) -> str:
        return await flaky.start(run)

    flaky_failures["left"] = 1
    before = now_ms()
    await execute(fake_client, retrying, activation())
    [record] = fake.writes("task")
    assert (record["status"], record["attempts"], record["error"]["message"]) == ("awaiting_retry", 1, "boom")
    assert record["next_attempt_at"] >= before + 30_000
    [suspend] = fake.writes("transition")
    assert (suspend["kind"], suspend["wake_at"]) == ("await_task_retry", record["next_attempt_at"])

    # Not yet due: suspend again without running.
    fake.requests.clear()
    pending = TaskRecord(
        address=record["address"],
        seq=0,
        name="flaky",
        status="awaiting_retry",
        attempts=1,
        next_attempt_at=now_ms() + 60_000,
        output=NULL,
    )
    await execute(fake_client, retrying, activation(tasks=[pending]))
    assert fake.writes("task") == []
    assert fake.writes("transition")[0]["kind"] == "await_task_retry"

    # Due: attempt 2 runs and completes.
    fake.requests.clear()
    pending.next_attempt_at = now_ms() - 1
    await execute(fake_client, retrying, activation(tasks=[pending]))
    [record] = fake.writes("task")
    assert (record["status"], record["attempts"], record["seq"]) == ("completed", 2, 0)
    assert fake.writes("transition")[0]["kind"] == "complete"


async def test_task_failure_raises_into_workflow_and_workflow_retries(fake: Any, fake_client: Any) -> None:
    seen: list[str] = []

    @wf.v("fails", retry=RetryPolicy.fixed(2, timedelta(seconds=5)))
    async def failing(run: Run) -> None:
        try:
            await broken.start(run)
        except TaskFailedError as e:
            seen.append(e.error.type)
            raise

    await execute(fake_client, failing, activation())
    assert seen == ["ValueError"]
    [record] = fake.writes("task")
    assert (record["status"], record["error"]["type"]) == ("failed", "ValueError")
    [retry] = fake.writes("transition")
    assert (retry["kind"], retry["error"]["type"]) == ("retry", "TaskFailedError")

    fake.requests.clear()
    failed = TaskRecord(
        address=record["address"],
        seq=0,
        name="broken",
        status="failed",
        attempts=1,
        error=ErrorInfo(type="ValueError", message="nope"),
        output=NULL,
    )
    await execute(fake_client, failing, activation(attempt=2, tasks=[failed]))
    assert fake.writes("task") == []
    assert fake.writes("transition")[0]["kind"] == "fail"


async def test_sleep_suspends_and_replays(fake: Any, fake_client: Any) -> None:
    @wf.v("sleepy")
    async def sleepy(run: Run) -> bool:
        await run.sleep(timedelta(seconds=2))
        result = await run.sleep(timedelta(minutes=1), name="cool-down")
        return result.cancelled

    await execute(fake_client, sleepy, activation())
    assert fake.writes("transition") == [
        {"revision": 7, "kind": "sleep", "name": "default", "seq": 0, "duration_ms": 2000}
    ]
    fake.requests.clear()
    sleeps = [
        SleepRecord(name="default", seq=0, status="completed", wake_at=1),
        SleepRecord(name="cool-down", seq=0, status="cancelled", wake_at=1),
    ]
    await execute(fake_client, sleepy, activation(sleeps=sleeps))
    assert fake.writes("transition") == [{"revision": 7, "kind": "complete", "output": True}]


@wf.v("events", events={"paid": event(int), "note": event()})
async def waits(run: Run) -> Any:
    first = await run.events.paid.wait(timeout=timedelta(days=1))
    if first.timeout:
        return "timeout"
    return first.data


async def test_event_wait_suspends_with_consumed_count(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, waits, activation())
    assert fake.writes("transition") == [
        {
            "revision": 7,
            "kind": "await_event",
            "event": "paid",
            "wait_seq": 0,
            "consumed": 0,
            "timeout_ms": 86_400_000,
        }
    ]


async def test_event_wait_replays_buffered_event_and_timeout(fake: Any, fake_client: Any) -> None:
    await execute(
        fake_client,
        waits,
        activation(events=[EventRecord(id="e", name="paid", seq=0, data=msgspec.Raw(b"5"))]),
    )
    assert fake.writes("transition")[-1]["output"] == 5
    fake.requests.clear()
    await execute(fake_client, waits, activation(wait_timeouts=[WaitTimeoutRecord(name="paid", seq=0)]))
    assert fake.writes("transition")[-1]["output"] == "timeout"


async def test_event_arriving_during_suspend_is_not_lost(fake: Any, fake_client: Any) -> None:
    fake.suspend = False
    fake.transition_events = [{"id": "e9", "name": "paid", "seq": 0, "data": 42}]
    await execute(fake_client, waits, activation())
    kinds = [t["kind"] for t in fake.writes("transition")]
    assert kinds == ["await_event", "complete"]
    assert fake.writes("transition")[-1]["output"] == 42


async def test_no_write_after_suspend_in_gather(fake: Any, fake_client: Any) -> None:
    @wf.v("gather-sleep")
    async def mixed(run: Run) -> None:
        async def slow() -> int:
            await asyncio.sleep(0.05)
            return await double.start(run, 1)

        await asyncio.gather(run.sleep(timedelta(hours=1)), slow())

    await execute(fake_client, mixed, activation())
    await asyncio.sleep(0.1)
    assert [t["kind"] for t in fake.writes("transition")] == ["sleep"]
    assert fake.writes("task") == []


async def test_stale_revision_abandons_silently(fake: Any, fake_client: Any) -> None:
    fake.commands["record_task"] = lambda _: {
        "problem": {"type": "about:blank", "title": "stale", "status": 409, "code": "stale_revision"}
    }
    execution = await execute(fake_client, sequential, activation(1))
    assert execution.finished
    assert fake.writes("transition") == []


async def test_server_unavailable_abandons_after_budget(fake: Any, fake_client: Any) -> None:
    fake.commands["record_task"] = lambda _: {
        "problem": {"type": "x", "title": "down", "status": 503, "code": "unavailable"}
    }
    await execute(fake_client, sequential, activation(1))
    assert len(fake.writes("task")) >= 1
    assert fake.writes("transition") == []


async def test_version_timeout_fails_with_cause(fake: Any, fake_client: Any) -> None:
    @wf.v("hang", timeout=timedelta(milliseconds=20))
    async def hang(run: Run) -> None:
        await asyncio.sleep(10)

    await execute(fake_client, hang, activation())
    [fail] = fake.writes("transition")
    assert (fail["kind"], fail["error"]["type"], fail["error"]["cause"]) == (
        "fail",
        "TimeoutError",
        "timeout",
    )


async def test_task_timeout_is_a_task_failure(fake: Any, fake_client: Any) -> None:
    @task(name="slow", timeout=timedelta(milliseconds=10))
    async def slow() -> None:
        await asyncio.sleep(10)

    @wf.v("task-timeout")
    async def uses_slow(run: Run) -> None:
        await slow.start(run)

    await execute(fake_client, uses_slow, activation())
    assert fake.writes("task")[0]["error"]["type"] == "TimeoutError"
    assert fake.writes("transition")[0]["kind"] == "fail"


async def test_bad_input_fails_without_running(fake: Any, fake_client: Any) -> None:
    await execute(fake_client, sequential, activation("not-an-int"))
    [fail] = fake.writes("transition")
    assert (fail["kind"], fail["error"]["type"]) == ("fail", "ValidationError")
    assert calls == []


def test_definitions_keep_the_plain_function() -> None:
    assert upper("x") == "X"
    assert (double.name, double.input_type, double.output_type) == ("double", int, int)
    assert (sequential.name, sequential.version, sequential.input_type) == ("wf", "1", int)
    with pytest.raises(TypeError):
        task(name="two")(lambda a, b: None)
