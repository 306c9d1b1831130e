"""The pipeline's batching stage: the commands of many runs coalesced into one :class:`CommandBatch`.

A worker running a hundred runs at once sends a hundred small writes at a time. One request each
costs more CPU on both ends than the writes themselves, so they travel as batches: a write goes
out at once (on the next loop iteration) if fewer than ``max_in_flight`` batches are on their way,
and otherwise waits for the next one, which then carries every write that piled up. A lone write
(a sequential workflow) therefore goes out as it would alone; under load the cost of a request is
shared by many writes.

A write is a *group*: the commands of one run that travel together (a task record and the
transition after it), kept together and in order in one batch. Each command keeps its own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from aiki.worker_sdk.errors import UnexpectedResponseError
from aiki.worker_sdk.protocol import BATCH_MAX_COMMANDS, Command, CommandResult

SendCommands = Callable[[Sequence[Command]], Awaitable[list[CommandResult]]]

# ``{"commands":[`` and ``]}`` around the commands, and a comma between two.
_FRAME_BYTES = len(b'{"commands":[]}')


class _Pending:
    __slots__ = ("commands", "future", "size")

    def __init__(self, commands: list[Command], size: int, future: asyncio.Future[list[CommandResult]]) -> None:
        self.commands, self.size, self.future = commands, size, future


def encoded_size(commands: Sequence[Command]) -> int:
    """The bytes ``commands`` take in a batch body (each command's JSON and a comma)."""
    return sum(len(msgspec.json.encode(c)) + 1 for c in commands)


class CommandBatcher:
    """Sends submitted groups of commands as batches, at most ``max_in_flight`` requests at a time.

    Args:
        send: Sends one batch and returns one result per command (raises the SDK's errors).
        max_bytes: The largest batch body the server takes (None: unknown, commands are not measured).
        max_in_flight: Batches on their way at once (None: no limit); more writes wait for the next.
    """

    def __init__(self, send: SendCommands, max_bytes: int | None, max_in_flight: int | None = 2) -> None:
        self._send = send
        self.max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, commands: list[Command]) -> list[CommandResult]:
        """Send ``commands`` (of one run, in order) with the next batch and return their results."""
        future: asyncio.Future[list[CommandResult]] = asyncio.get_running_loop().create_future()
        size = encoded_size(commands) if self.max_bytes is not None else 0
        self._pending.append(_Pending(commands, size, future))
        self._schedule()
        return await future

    def _slot_free(self) -> bool:
        return self._max_in_flight is None or self._in_flight < self._max_in_flight

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or not self._slot_free():
            return
        self._scheduled = True
        # One loop iteration later: writes submitted by other runs in the same iteration join in.
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._slot_free():
            batch = self._take()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fits(self, count: int, size: int, item: _Pending) -> bool:
        """Whether ``item`` joins a batch of ``count`` commands and ``size`` bytes (the first always does)."""
        if not count:
            return True
        if count + len(item.commands) > BATCH_MAX_COMMANDS:
            return False
        return self.max_bytes is None or size + item.size <= self.max_bytes

    def _take(self) -> list[_Pending]:
        size, count, taken = _FRAME_BYTES, 0, 0
        for item in self._pending:
            if not self._fits(count, size, item):
                break
            taken += 1
            if not item.future.done():  # its caller gave up (cancelled): nothing to send
                size += item.size
                count += len(item.commands)
        batch = [item for item in self._pending[:taken] if not item.future.done()]
        del self._pending[:taken]
        return batch

    async def _deliver(self, batch: list[_Pending]) -> None:
        try:
            if batch:
                await self._answer(batch)
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:  # the whole request failed: every command in it did
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._schedule()

    async def _answer(self, batch: list[_Pending]) -> None:
        commands = [c for item in batch for c in item.commands]
        results = await self._send(commands)
        if len(results) != len(commands):
            raise UnexpectedResponseError(
                f"the batch of {len(commands)} commands was answered with {len(results)} results"
            )
        start = 0
        for item in batch:
            end = start + len(item.commands)
            if not item.future.done():
                item.future.set_result(results[start:end])
            start = end

    async def aclose(self) -> None:
        """Cancel batches on their way (their callers see ``CancelledError``)."""
        for task in list(self._tasks):
            task.cancel()
        for item in self._pending:
            item.future.cancel()
        self._pending.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
