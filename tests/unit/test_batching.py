"""The write pipeline's stages: batching (what goes in which request, who gets which answer),
deferral (a task's record joins the run's next command), and parking commands (alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from aiki.worker_sdk._batching import CommandBatcher, encoded_size
from aiki.worker_sdk._pipeline import WritePipeline
from aiki.worker_sdk._run_writer import Abandon, RunWriter, raise_problems
from aiki.worker_sdk.errors import (
    ServerUnavailableError,
    StaleRevisionError,
    TaskConflictError,
    UnexpectedResponseError,
)
from aiki.worker_sdk.protocol import (
    BATCH_MAX_COMMANDS,
    Command,
    CommandBatch,
    CommandResult,
    Complete,
    Problem,
    RecordTask,
    RecordTaskResponse,
    ResumeSleep,
    Sleep,
    TransitionResponse,
)


class FakeServer:
    """Answers batches: ``recorded`` echoes the record's seq parity; holds each batch until released.

    Like the server, once a run's command is refused (``refuse``: the kinds to refuse) the run's
    later commands in the batch get the same problem.
    """

    max_in_flight: int | None = 2

    def __init__(self) -> None:
        self.batches: list[list[Command]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None
        self.drop_one = False
        self.arrived = asyncio.Event()
        self.refuse: dict[type[Any], Problem] = {}

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]:
        # What travels is a CommandBatch: the commands survive its encoding unchanged.
        body = msgspec.json.encode(CommandBatch(commands=list(commands)))
        batch = msgspec.json.decode(body, type=CommandBatch).commands
        assert batch == list(commands)
        self.batches.append(batch)
        self.arrived.set()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        results = self._answer(batch)
        return results[1:] if self.drop_one else results

    def _answer(self, batch: list[Command]) -> list[CommandResult]:
        refused: dict[str, Problem] = {}
        results = []
        for command in batch:
            problem = refused.get(command.run_id) or self.refuse.get(type(command))
            if problem is not None:
                refused[command.run_id] = problem
                results.append(CommandResult(problem=problem))
            elif isinstance(command, RecordTask):
                results.append(CommandResult(record=RecordTaskResponse(recorded=command.seq % 2 == 0)))
            else:
                results.append(CommandResult(transition=TransitionResponse(status="completed")))
        return results


def record(seq: int, run_id: str = "r", padding: str = "") -> RecordTask:
    return RecordTask(
        run_id=run_id,
        revision=5,
        address=f"a{padding}",
        seq=seq,
        name="t",
        status="completed",
        attempts=1,
        output=seq,
    )


def seqs(batch: list[Command]) -> list[int]:
    return [c.seq for c in batch if isinstance(c, RecordTask)]


# -- batching ----------------------------------------------------------------------------------


def test_the_measured_size_is_the_batch_body_size() -> None:
    commands: list[Command] = [record(0), Complete(run_id="r", revision=3, output={"ok": True})]
    body = msgspec.json.encode(CommandBatch(commands=commands))
    assert len(b'{"commands":[]}') + encoded_size(commands) - 1 == len(body)


async def test_writes_of_one_loop_iteration_go_in_one_request() -> None:
    server = FakeServer()
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20)
    outcomes = await asyncio.gather(*(batcher.submit([record(i, run_id=f"r{i}")]) for i in range(10)))
    assert [len(b) for b in server.batches] == [10]
    assert [o.record.recorded if o.record else None for [o] in outcomes] == [i % 2 == 0 for i in range(10)]


async def test_writes_made_while_batches_are_in_flight_wait_for_the_next_one() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit([record(0)]))
    await server.arrived.wait()
    later = [asyncio.ensure_future(batcher.submit([record(i)])) for i in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(b) for b in server.batches] == [1]  # nothing more while the only slot is taken
    server.gate.set()
    await asyncio.gather(first, *later)
    assert [seqs(b) for b in server.batches] == [[0], [1, 2, 3, 4, 5]]


async def test_without_an_in_flight_limit_writes_never_wait_for_an_answer() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = CommandBatcher(server.run_commands, max_bytes=None, max_in_flight=None)
    first = asyncio.ensure_future(batcher.submit([record(0)]))
    await server.arrived.wait()
    second = asyncio.ensure_future(batcher.submit([record(1)]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert [seqs(b) for b in server.batches] == [[0], [1]]
    server.gate.set()
    await asyncio.gather(first, second)


async def test_a_batch_is_cut_at_the_byte_limit_and_the_command_limit() -> None:
    server = FakeServer()
    one = encoded_size([record(0, padding="p" * 200)])
    batcher = CommandBatcher(server.run_commands, max_bytes=3 * one + 20, max_in_flight=1)
    await asyncio.gather(*(batcher.submit([record(i, padding="p" * 200)]) for i in range(7)))
    assert [len(b) for b in server.batches] == [3, 3, 1]
    assert all(20 + encoded_size(b) <= 3 * one + 20 for b in server.batches)

    server.batches.clear()
    many = CommandBatcher(server.run_commands, max_bytes=1 << 24, max_in_flight=1)
    await asyncio.gather(*(many.submit([record(i)]) for i in range(BATCH_MAX_COMMANDS + 5)))
    assert [len(b) for b in server.batches] == [BATCH_MAX_COMMANDS, 5]


async def test_a_group_larger_than_a_batch_travels_alone() -> None:
    server = FakeServer()
    batcher = CommandBatcher(server.run_commands, max_bytes=encoded_size([record(0)]) + 20, max_in_flight=1)
    await asyncio.gather(batcher.submit([record(0, padding="p" * 100)]), batcher.submit([record(1)]))
    assert [seqs(b) for b in server.batches] == [[0], [1]]


async def test_the_commands_of_one_group_stay_together_and_in_order() -> None:
    server = FakeServer()
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20)
    group: list[Command] = [record(4, run_id="a"), Complete(run_id="a", revision=1, output=1)]
    results = await asyncio.gather(batcher.submit([record(1, run_id="b")]), batcher.submit(group))
    [batch] = server.batches
    assert batch == [record(1, run_id="b"), *group]
    assert [len(r) for r in results] == [1, 2]
    assert results[1][1].transition is not None


async def test_a_failed_request_fails_every_write_in_it() -> None:
    server = FakeServer()
    server.fail_with = ServerUnavailableError("connection refused")
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20)
    results = await asyncio.gather(*(batcher.submit([record(i)]) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ServerUnavailableError) for r in results)
    # The batcher keeps working afterwards.
    server.fail_with = None
    assert (await batcher.submit([record(0)]))[0].record == RecordTaskResponse(recorded=True)


async def test_an_answer_with_the_wrong_number_of_results_is_refused() -> None:
    server = FakeServer()
    server.drop_one = True
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20)
    results = await asyncio.gather(*(batcher.submit([record(i)]) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, UnexpectedResponseError) for r in results)


async def test_a_write_whose_caller_gave_up_is_not_sent() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit([record(0)]))
    await server.arrived.wait()
    abandoned = asyncio.ensure_future(batcher.submit([record(1)]))
    kept = asyncio.ensure_future(batcher.submit([record(2)]))
    await asyncio.sleep(0)
    abandoned.cancel()
    server.gate.set()
    await asyncio.gather(first, kept)
    assert [seqs(b) for b in server.batches] == [[0], [2]]


async def test_closing_cancels_writes_on_their_way() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = CommandBatcher(server.run_commands, max_bytes=1 << 20, max_in_flight=1)
    sent = asyncio.ensure_future(batcher.submit([record(0)]))
    await server.arrived.wait()
    waiting = asyncio.ensure_future(batcher.submit([record(1)]))
    await asyncio.sleep(0)
    await batcher.aclose()
    for future in (sent, waiting):
        with pytest.raises(asyncio.CancelledError):
            await future


def test_a_problem_result_raises_the_route_error() -> None:
    # The SDK raises from the problem exactly as from an HTTP answer.
    problem = Problem(type="t", title="Conflict", status=409, code="stale_revision", detail="moved on", run_id="r")
    with pytest.raises(StaleRevisionError) as info:
        raise_problems([CommandResult(record=RecordTaskResponse(recorded=True)), CommandResult(problem=problem)])
    assert (info.value.status, info.value.run_id) == (409, "r")
    raise_problems([CommandResult(record=RecordTaskResponse(recorded=True))])


# -- the pipeline: deferral, coalescing across runs, parking -----------------------------------


def writer(pipeline: WritePipeline, run_id: str = "r", payload_max_bytes: int | None = 1 << 16) -> RunWriter:
    return RunWriter(
        pipeline,
        run_id,
        5,
        retry_budget=0.1,
        payload_max_bytes=payload_max_bytes,
        lease_ttl_ms=30_000,
        claimed_at=None,
        heartbeat=None,
        paused=lambda: None,
    )


async def test_a_deferred_record_joins_the_next_command_in_one_batch() -> None:
    server = FakeServer()
    w = writer(WritePipeline(server))  # type: ignore[arg-type]
    assert w.may_defer(100)
    w.defer(record(2), 100)
    answer = await w.transition(Complete(run_id="r", revision=0, output=7))
    assert answer.status == "completed"
    [batch] = server.batches
    assert [type(c) for c in batch] == [RecordTask, Complete]
    assert [c.revision for c in batch] == [5, 5]  # both fenced by the revision the execution holds


async def test_a_deferred_record_with_no_next_command_goes_alone_at_once() -> None:
    server = FakeServer()
    w = writer(WritePipeline(server))  # type: ignore[arg-type]
    w.defer(record(2), 100)
    await asyncio.sleep(0.01)
    assert server.batches == [[record(2)]]
    await w.flush()  # nothing left to make durable
    assert len(server.batches) == 1


async def test_new_work_waits_until_a_deferred_record_is_durable() -> None:
    server = FakeServer()
    w = writer(WritePipeline(server))  # type: ignore[arg-type]
    w.defer(record(2), 100)
    await w.flush()
    assert server.batches == [[record(2)]]
    assert not w.may_defer(1 << 15)  # over a quarter of the request limit: sent at once instead


async def test_writes_of_many_runs_coalesce_into_one_batch() -> None:
    server = FakeServer()
    pipeline = WritePipeline(server)  # type: ignore[arg-type]
    writers = [writer(pipeline, run_id=f"run-{i}") for i in range(3)]
    for i, w in enumerate(writers):
        w.defer(record(i, run_id=f"run-{i}"), 100)
    await asyncio.gather(*(w.transition(Complete(run_id=w.run_id, revision=0)) for w in writers))
    [batch] = server.batches
    assert [(c.run_id, type(c).__name__) for c in batch] == [
        (f"run-{i}", kind) for i in range(3) for kind in ("RecordTask", "Complete")
    ]


async def test_a_parking_command_goes_alone_past_a_full_batcher() -> None:
    server = FakeServer()
    server.max_in_flight = 1
    pipeline = WritePipeline(server)  # type: ignore[arg-type]
    server.gate.clear()
    busy = asyncio.ensure_future(writer(pipeline, run_id="other").record(record(0, run_id="other")))
    await server.arrived.wait()
    queued = asyncio.ensure_future(writer(pipeline, run_id="third").record(record(0, run_id="third")))
    resume = asyncio.ensure_future(
        writer(pipeline, run_id="held").transition(ResumeSleep(run_id="held", revision=0, name="nap", seq=0))
    )
    for _ in range(3):
        await asyncio.sleep(0)
    # The only batch slot is taken, yet the resume is on its way, alone.
    assert [[type(c).__name__ for c in b] for b in server.batches] == [["RecordTask"], ["ResumeSleep"]]
    server.gate.set()
    await asyncio.gather(busy, queued, resume)


async def test_a_sleep_is_no_parking_command_but_its_resume_is() -> None:
    assert not Sleep.parks
    assert ResumeSleep.parks


async def test_a_refused_record_refuses_the_command_it_travels_with() -> None:
    server = FakeServer()
    server.refuse[RecordTask] = Problem(type="t", title="Conflict", status=409, code="task_conflict", run_id="r")
    w = writer(WritePipeline(server))  # type: ignore[arg-type]
    w.defer(record(2), 100)
    with pytest.raises(Abandon) as info:
        await w.transition(Complete(run_id="r", revision=0, output=7))
    cause = info.value.__cause__
    assert isinstance(cause, TaskConflictError)
    assert (cause.status, cause.code) == (409, "task_conflict")
    assert w.finished  # the execution writes nothing more
    [batch] = server.batches
    assert [type(c) for c in batch] == [RecordTask, Complete]


async def test_a_held_sleep_sends_its_resume_alone_and_is_left_out_while_held() -> None:
    server = FakeServer()
    seen: list[tuple[str, bool]] = []
    answers = {
        Sleep: TransitionResponse(status="sleeping", suspended=False, held=True),
        ResumeSleep: TransitionResponse(status="running", suspended=False),
    }

    async def run_commands(commands: Sequence[Command]) -> list[CommandResult]:
        server.batches.append(list(commands))
        seen.extend((type(c).__name__, w.holding) for c in commands)
        return [CommandResult(transition=answers[type(c)]) for c in commands]

    server.run_commands = run_commands  # type: ignore[method-assign]
    w = writer(WritePipeline(server))  # type: ignore[arg-type]
    holds = w.holds
    answer = await w.transition(Sleep(run_id="r", revision=0, name="nap", seq=0, duration_ms=50, hold=True))
    assert answer.status == "running"
    assert seen == [("Sleep", True), ("ResumeSleep", True)]
    assert [[type(c).__name__ for c in b] for b in server.batches] == [["Sleep"], ["ResumeSleep"]]
    assert isinstance(server.batches[0][0], Sleep)
    assert server.batches[0][0].hold
    assert (w.holding, w.holds) == (False, holds + 2)  # changed at both ends


async def test_without_requests_to_share_each_group_is_a_call_of_its_own() -> None:
    # The local port: no batching stage, so no write waits for another run's.
    server = FakeServer()
    server.max_in_flight = None
    server.gate.clear()
    pipeline = WritePipeline(server)  # type: ignore[arg-type]
    first = asyncio.ensure_future(pipeline.send([record(0, run_id="a")]))
    second = asyncio.ensure_future(pipeline.send([record(1, run_id="b"), Complete(run_id="b", revision=5)]))
    await asyncio.sleep(0)
    assert [[c.run_id for c in b] for b in server.batches] == [["a"], ["b", "b"]]
    server.gate.set()
    await asyncio.gather(first, second)
