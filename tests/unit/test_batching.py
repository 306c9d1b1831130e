"""The worker's write batcher: what goes in which request, and who gets which answer."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from aiki.worker_sdk.batching import WriteBatcher, encode_op
from aiki.worker_sdk.errors import ServerUnavailableError, UnexpectedResponseError
from aiki.worker_sdk.protocol import (
    BATCH_MAX_OPS,
    BatchOutcome,
    Problem,
    RecordTaskOp,
    RecordTaskRequest,
    RecordTaskResponse,
    TransitionOp,
    TransitionRequest,
    WorkerBatchRequest,
    WorkerBatchResponse,
)


class FakeServer:
    """Answers batches: ``recorded`` echoes the op's seq parity; holds each batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[RecordTaskOp | TransitionOp]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None
        self.drop_one = False
        self.arrived = asyncio.Event()

    async def send(self, body: bytes) -> WorkerBatchResponse:
        request = msgspec.json.decode(body, type=WorkerBatchRequest)
        self.batches.append(request.ops)
        self.arrived.set()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        results = [BatchOutcome(record=RecordTaskResponse(recorded=op.request.seq % 2 == 0)) for op in request.ops]
        return WorkerBatchResponse(results=results[1:] if self.drop_one else results)


def op(seq: int, run_id: str = "r", padding: str = "") -> bytes:
    request = RecordTaskRequest(
        revision=1, address=f"a{padding}", seq=seq, name="t", status="completed", attempts=1, output=seq
    )
    return encode_op("record_task", run_id, request)


def test_an_encoded_op_is_the_wire_struct() -> None:
    request = TransitionRequest(revision=3, kind="complete", output={"ok": True})
    decoded = msgspec.json.decode(encode_op("transition", "run-1", request), type=TransitionOp)
    assert decoded.run_id == "run-1"
    assert decoded.request == msgspec.json.decode(msgspec.json.encode(request), type=TransitionRequest)


async def test_writes_of_one_loop_iteration_go_in_one_request() -> None:
    server = FakeServer()
    batcher = WriteBatcher(server.send, max_bytes=1 << 20)
    outcomes = await asyncio.gather(*(batcher.submit(op(i)) for i in range(10)))
    assert [len(b) for b in server.batches] == [10]
    assert [o.record.recorded if o.record else None for o in outcomes] == [i % 2 == 0 for i in range(10)]


async def test_writes_made_while_batches_are_in_flight_wait_for_the_next_one() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = WriteBatcher(server.send, max_bytes=1 << 20, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(op(0)))
    await server.arrived.wait()
    later = [asyncio.ensure_future(batcher.submit(op(i))) for i in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(b) for b in server.batches] == [1]  # nothing more while the only slot is taken
    server.gate.set()
    await asyncio.gather(first, *later)
    assert [[o.request.seq for o in b] for b in server.batches] == [[0], [1, 2, 3, 4, 5]]


async def test_a_batch_is_cut_at_the_byte_limit_and_the_op_limit() -> None:
    server = FakeServer()
    one = len(op(0, padding="p" * 200))
    batcher = WriteBatcher(server.send, max_bytes=3 * one + 20, max_in_flight=1)
    await asyncio.gather(*(batcher.submit(op(i, padding="p" * 200)) for i in range(7)))
    assert [len(b) for b in server.batches] == [3, 3, 1]
    assert all(len(b"".join(op(0, padding="p" * 200) for _ in b)) <= 3 * one + 20 for b in server.batches)

    server.batches.clear()
    many = WriteBatcher(server.send, max_bytes=1 << 24, max_in_flight=1)
    await asyncio.gather(*(many.submit(op(i)) for i in range(BATCH_MAX_OPS + 5)))
    assert [len(b) for b in server.batches] == [BATCH_MAX_OPS, 5]


def test_an_op_larger_than_a_batch_does_not_fit() -> None:
    batcher = WriteBatcher(FakeServer().send, max_bytes=len(op(0)) + 20)
    assert batcher.fits(op(0))
    assert not batcher.fits(op(0, padding="p" * 100))


async def test_a_failed_request_fails_every_write_in_it() -> None:
    server = FakeServer()
    server.fail_with = ServerUnavailableError("connection refused")
    batcher = WriteBatcher(server.send, max_bytes=1 << 20)
    results = await asyncio.gather(*(batcher.submit(op(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ServerUnavailableError) for r in results)
    # The batcher keeps working afterwards.
    server.fail_with = None
    assert (await batcher.submit(op(0))).record == RecordTaskResponse(recorded=True)


async def test_an_answer_with_the_wrong_number_of_outcomes_is_refused() -> None:
    server = FakeServer()
    server.drop_one = True
    batcher = WriteBatcher(server.send, max_bytes=1 << 20)
    results = await asyncio.gather(*(batcher.submit(op(i)) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, UnexpectedResponseError) for r in results)


async def test_a_write_whose_caller_gave_up_is_not_sent() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = WriteBatcher(server.send, max_bytes=1 << 20, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(op(0)))
    await server.arrived.wait()
    abandoned = asyncio.ensure_future(batcher.submit(op(1)))
    kept = asyncio.ensure_future(batcher.submit(op(2)))
    await asyncio.sleep(0)
    abandoned.cancel()
    server.gate.set()
    await asyncio.gather(first, kept)
    assert [[o.request.seq for o in b] for b in server.batches] == [[0], [2]]


async def test_closing_cancels_writes_on_their_way() -> None:
    server = FakeServer()
    server.gate.clear()
    batcher = WriteBatcher(server.send, max_bytes=1 << 20, max_in_flight=1)
    sent = asyncio.ensure_future(batcher.submit(op(0)))
    await server.arrived.wait()
    waiting = asyncio.ensure_future(batcher.submit(op(1)))
    await asyncio.sleep(0)
    await batcher.aclose()
    for future in (sent, waiting):
        with pytest.raises(asyncio.CancelledError):
            await future


def test_a_problem_outcome_carries_the_route_problem() -> None:
    # The SDK raises from the problem exactly as from an HTTP answer (see client._answer).
    from aiki.worker_sdk.client import _answer
    from aiki.worker_sdk.errors import StaleRevisionError

    problem = Problem(type="t", title="Conflict", status=409, code="stale_revision", detail="moved on", run_id="r")
    with pytest.raises(StaleRevisionError) as info:
        _answer(BatchOutcome(problem=problem), None, "/runs/r/tasks")
    assert (info.value.status, info.value.run_id) == (409, "r")
    with pytest.raises(UnexpectedResponseError):
        _answer(BatchOutcome(), None, "/runs/r/tasks")
