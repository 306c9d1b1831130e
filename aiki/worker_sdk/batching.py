"""Coalescing a worker's writes into ``POST /workers/batch`` requests.

A worker running a hundred runs at once sends a hundred small writes (task records, transitions)
at a time. One HTTP request each costs more CPU on both ends than the writes themselves, so the
client sends them as batches: a write is sent at once if fewer than ``max_in_flight`` batches are
on their way, and otherwise waits for the next one, which then carries every write that piled up.
A lone write (a sequential workflow) therefore goes out on the next loop iteration, as it would
alone; under load the cost of a request is shared by many writes.

Each operation keeps its own answer: the server applies it as its own route would (own
transaction, own revision fence) and returns its response or its problem, which the caller turns
into the same exception as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec

from aiki.worker_sdk.errors import UnexpectedResponseError
from aiki.worker_sdk.protocol import BATCH_MAX_OPS, BatchOutcome, WorkerBatchResponse

SendBatch = Callable[[bytes], Awaitable[WorkerBatchResponse]]

_OPEN = b'{"ops":['
_CLOSE = b"]}"


def encode_op(kind: str, run_id: str, request: msgspec.Struct) -> bytes:
    """One operation's JSON (``RecordTaskOp`` or ``TransitionOp``), built around the encoded request."""
    head = b'{"op":' + msgspec.json.encode(kind) + b',"run_id":' + msgspec.json.encode(run_id) + b',"request":'
    return head + msgspec.json.encode(request) + b"}"


class WriteBatcher:
    """Sends submitted operations as batches, at most ``max_in_flight`` requests at a time.

    Args:
        send: Posts one batch body and returns the decoded answer (raises the SDK's errors).
        max_bytes: The largest batch body the server takes.
        max_in_flight: Batches on their way at once; more writes wait for the next batch.
    """

    def __init__(self, send: SendBatch, max_bytes: int, max_in_flight: int = 2) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[bytes, asyncio.Future[BatchOutcome]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def fits(self, op: bytes) -> bool:
        """Whether ``op`` can travel in a batch at all (else: send it through its own route)."""
        return len(_OPEN) + len(op) + len(_CLOSE) <= self._max_bytes

    async def submit(self, op: bytes) -> BatchOutcome:
        """Send ``op`` (from :func:`encode_op`) with the next batch and return its outcome."""
        future: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self._max_in_flight:
            return
        self._scheduled = True
        # One loop iteration later: writes submitted by other runs in the same iteration join in.
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._take()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[bytes, asyncio.Future[BatchOutcome]]]:
        size = len(_OPEN) + len(_CLOSE)
        count = 0
        for op, future in self._pending:
            if count == BATCH_MAX_OPS or (count and size + len(op) + 1 > self._max_bytes):
                break
            if not future.done():  # its caller gave up (cancelled): nothing to send
                size += len(op) + 1
            count += 1
        batch = [item for item in self._pending[:count] if not item[1].done()]
        del self._pending[:count]
        return batch

    async def _deliver(self, batch: list[tuple[bytes, asyncio.Future[BatchOutcome]]]) -> None:
        try:
            if not batch:
                return
            body = _OPEN + b",".join(op for op, _ in batch) + _CLOSE
            answer = await self._send(body)
            if len(answer.results) != len(batch):
                raise UnexpectedResponseError(
                    f"the batch of {len(batch)} operations was answered with {len(answer.results)} outcomes"
                )
            for (_, future), outcome in zip(batch, answer.results, strict=True):
                if not future.done():
                    future.set_result(outcome)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole request failed: every operation in it did
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._schedule()

    async def aclose(self) -> None:
        """Cancel batches on their way (their callers see ``CancelledError``)."""
        for task in list(self._tasks):
            task.cancel()
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
