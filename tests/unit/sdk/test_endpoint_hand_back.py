"""A push endpoint's execution at its time limit, against a fake transport whose writes the test
holds and answers: attempts under way are cancelled unrecorded, the records of finished ones are
written (a deferred one and one on its way included), nothing else is; and the answer each way an
execution ends maps to."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from aiki.worker_sdk import Run, task, workflow
from aiki.worker_sdk._endpoint_execution import EndpointExecution, execute, margin
from aiki.worker_sdk._run_writer import Suspend
from aiki.worker_sdk._worker_connection import WorkerConnection
from aiki.worker_sdk.errors import ServerUnavailableError
from aiki.worker_sdk.protocol import (
    Activation,
    Command,
    CommandResult,
    Complete,
    DeliveryAnswer,
    Problem,
    RecordTask,
    RecordTaskResponse,
    TransitionResponse,
)


class FakeTransport:
    """Answers writes like a cooperative server; a write named in ``held`` (a task's record by the
    task's name, another command by its type's) waits for its gate."""

    max_in_flight: int | None = None

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.held: dict[str, asyncio.Event] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.problem: Problem | None = None
        self.unavailable = False

    def arrival(self, name: str) -> asyncio.Event:
        return self.arrived.setdefault(name, asyncio.Event())

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]:
        if self.unavailable:
            raise ServerUnavailableError("connection refused")
        for command in commands:
            name = command.name if isinstance(command, RecordTask) else type(command).__name__
            self.arrival(name).set()
            if name in self.held:
                await self.held[name].wait()
        self.sent.extend(commands)
        if self.problem is not None:
            return [CommandResult(problem=self.problem) for _ in commands]
        return [_result(c) for c in commands]


def _result(command: Command) -> CommandResult:
    if isinstance(command, RecordTask):
        return CommandResult(record=RecordTaskResponse(recorded=True))
    status = "completed" if isinstance(command, Complete) else "failed" if command.ends_execution else "sleeping"
    return CommandResult(transition=TransitionResponse(status=status))


_started: dict[str, asyncio.Event] = {}
_cancelled: list[str] = []
_invoked: list[str] = []


def _start(name: str) -> asyncio.Event:
    return _started.setdefault(name, asyncio.Event())


@task(name="quick")
async def quick(n: int) -> int:
    _invoked.append("quick")
    return n + 1


@task(name="later")
async def later(n: int) -> int:
    _invoked.append("later")
    return n + 2


@task(name="blocking")
async def blocking(n: int) -> int:
    _invoked.append("blocking")
    _start("blocking").set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _cancelled.append("blocking")
        raise
    return n


@task(name="failing")
async def failing(n: int) -> int:
    raise RuntimeError("no")


wf = workflow("hand-back")


@wf.v("parallel")
async def parallel(run: Run, n: int) -> int:
    a, b = await asyncio.gather(quick.start(run, n), blocking.start(run, n))
    return a + b


@wf.v("sequential")
async def sequential(run: Run, n: int) -> int:
    a = await quick.start(run, n)
    return await later.start(run, a)


@wf.v("fails")
async def fails(run: Run, n: int) -> int:
    return await failing.start(run, n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    _started.clear()
    _cancelled.clear()
    _invoked.clear()


def _activation(version: str) -> Activation:
    return Activation(
        run_id="run-1",
        revision=3,
        workflow="hand-back",
        version=version,
        attempt=1,
        input=msgspec.Raw(b"1"),
        lease_ttl_ms=30_000,
    )


def _execution(transport: FakeTransport, version: Any, *, defer: bool = False) -> EndpointExecution:
    connection = WorkerConnection(transport)  # type: ignore[arg-type]
    connection.payload_max_bytes = 64 * 1024 if defer else None
    return EndpointExecution(connection, version, _activation(version.version), retry_budget=1.0, may_hold=None)


async def _until(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


def _kinds(transport: FakeTransport) -> list[str]:
    return [c.name if isinstance(c, RecordTask) else type(c).__name__ for c in transport.sent]


# -- hand_back -----------------------------------------------------------------------------------


@pytest.mark.parametrize("defer", [False, True], ids=["sent-at-once", "deferred"])
async def test_the_attempt_under_way_is_cancelled_and_the_finished_one_recorded(defer: bool) -> None:
    transport = FakeTransport()
    execution = _execution(transport, parallel, defer=defer)
    running = asyncio.create_task(execution.execute())
    await _until(_start("blocking"))
    await _until(transport.arrival("quick"))  # sent at once, or as soon as the loop turned
    await execution.hand_back(grace=5)
    await asyncio.wait_for(running, 5)
    assert _cancelled == ["blocking"]
    assert _kinds(transport) == ["quick"]
    assert execution.outcome is None
    assert execution.finished


async def test_a_record_on_its_way_is_answered_before_the_hand_back_ends() -> None:
    transport = FakeTransport()
    transport.held["quick"] = asyncio.Event()
    execution = _execution(transport, parallel)
    running = asyncio.create_task(execution.execute())
    await _until(transport.arrival("quick"))
    await _until(_start("blocking"))
    handing = asyncio.create_task(execution.hand_back(grace=5))
    for _ in range(20):  # the loop turns; the hand-back waits for the record's answer
        await asyncio.sleep(0)
    assert _cancelled == ["blocking"]
    assert not handing.done()
    transport.held["quick"].set()
    await asyncio.wait_for(handing, 5)
    await asyncio.wait_for(running, 5)
    assert _kinds(transport) == ["quick"]


async def test_nothing_new_starts_once_handed_back() -> None:
    """The first task's record is on its way at the time limit: it is written, the next task never runs."""
    transport = FakeTransport()
    transport.held["quick"] = asyncio.Event()
    execution = _execution(transport, sequential)
    running = asyncio.create_task(execution.execute())
    await _until(transport.arrival("quick"))
    handing = asyncio.create_task(execution.hand_back(grace=5))
    await asyncio.sleep(0)
    transport.held["quick"].set()
    await asyncio.wait_for(handing, 5)
    await asyncio.wait_for(running, 5)
    assert _invoked == ["quick"]
    assert _kinds(transport) == ["quick"]


async def test_a_deferred_record_is_written_by_close_and_only_once() -> None:
    transport = FakeTransport()
    execution = _execution(transport, sequential, defer=True)
    writer = execution.writer
    record = RecordTask(
        run_id="run-1", revision=3, address="quick:x", seq=0, name="quick", status="completed", attempts=1
    )
    assert writer.may_defer(10)
    writer.defer(record, 10)
    writer.closing = True
    assert not writer.may_defer(10)
    await writer.close()
    for _ in range(3):  # the flush the deferral scheduled finds nothing left to send
        await asyncio.sleep(0)
    assert _kinds(transport) == ["quick"]
    assert writer.finished


async def test_a_hand_back_writes_a_record_deferred_a_moment_before() -> None:
    """The time limit comes in the loop iteration a finished task's record was deferred in."""
    transport = FakeTransport()
    execution = _execution(transport, sequential, defer=True)
    record = RecordTask(
        run_id="run-1", revision=3, address="quick:x", seq=0, name="quick", status="completed", attempts=1
    )
    execution.writer.defer(record, 10)
    await execution.hand_back(grace=5)
    for _ in range(3):
        await asyncio.sleep(0)
    assert _kinds(transport) == ["quick"]


async def test_a_closing_writer_writes_records_only() -> None:
    transport = FakeTransport()
    writer = _execution(transport, sequential, defer=True).writer
    record = RecordTask(
        run_id="run-1", revision=3, address="quick:x", seq=0, name="quick", status="completed", attempts=1
    )
    writer.defer(record, 10)
    writer.closing = True
    with pytest.raises(Suspend):
        await writer.transition(Complete(run_id="run-1", revision=3, output=msgspec.Raw(b"1")))
    # The deferred record went out alone; the completion did not.
    assert _kinds(transport) == ["quick"]
    assert not writer.finished  # sibling coroutines may still record the attempts they finished


# -- what the endpoint answers ------------------------------------------------------------------


def _connection(transport: FakeTransport) -> WorkerConnection:
    return WorkerConnection(transport)  # type: ignore[arg-type]


async def test_an_execution_that_completes_answers_completed() -> None:
    transport = FakeTransport()
    reply = await execute(_connection(transport), sequential, _activation("sequential"), limit_s=10)
    assert reply.status == 200
    assert reply.body == DeliveryAnswer(outcome="completed", run_id="run-1", revision=3)
    assert _kinds(transport) == ["quick", "later", "Complete"]


async def test_an_execution_that_fails_answers_failed() -> None:
    reply = await execute(_connection(FakeTransport()), fails, _activation("fails"), limit_s=10)
    assert (reply.status, reply.body.outcome) == (200, "failed")


async def test_the_time_limit_answers_handed_back_in_time() -> None:
    transport = FakeTransport()
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await execute(_connection(transport), parallel, _activation("parallel"), limit_s=0.5)
    assert loop.time() - started < 0.5
    assert (reply.status, reply.body.outcome) == (200, "handed_back")
    assert _kinds(transport) == ["quick"]
    assert _cancelled == ["blocking"]


async def test_an_ending_on_its_way_at_the_time_limit_is_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The completion was sent just before the time limit: the hand-back waits for its answer."""
    transport = FakeTransport()
    transport.held["Complete"] = asyncio.Event()
    handing_back = asyncio.Event()
    original = EndpointExecution.hand_back

    async def hand_back(self: EndpointExecution, grace: float) -> None:
        handing_back.set()
        await original(self, grace)

    monkeypatch.setattr(EndpointExecution, "hand_back", hand_back)
    answering = asyncio.create_task(execute(_connection(transport), sequential, _activation("sequential"), limit_s=1))
    await _until(transport.arrival("Complete"))
    await _until(handing_back)  # the time limit came while the completion was on its way
    transport.held["Complete"].set()
    reply = await asyncio.wait_for(answering, 5)
    assert (reply.status, reply.body.outcome) == (200, "completed")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("stale_revision", 409, (200, "superseded")),
        ("run_not_found", 404, (404, "run run-1 is not known to the server")),
        ("validation_error", 422, (502, "the Aiki server refused a write (validation_error): nope")),
    ],
)
async def test_a_refused_write_maps_to_its_answer(code: str, status: int, expected: tuple[int, str]) -> None:
    transport = FakeTransport()
    transport.problem = Problem(type="about:blank", title="t", status=status, code=code, detail="nope")
    reply = await execute(_connection(transport), sequential, _activation("sequential"), limit_s=10)
    body = reply.body.outcome if reply.status == 200 else reply.body["error"]
    assert (reply.status, body) == expected


async def test_an_unreachable_server_answers_503() -> None:
    transport = FakeTransport()
    transport.unavailable = True
    reply = await execute(_connection(transport), sequential, _activation("sequential"), limit_s=0.5)
    assert reply.status == 503
    assert reply.body["error"].startswith("the Aiki server is unavailable")


def test_the_margin_is_a_tenth_of_the_limit_within_bounds() -> None:
    assert margin(60) == 2.0
    assert margin(10) == 1.0
    assert margin(1) == 0.25
    assert margin(0.4) == pytest.approx(0.1)
