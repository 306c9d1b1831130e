"""The write pipeline: every executor write, from the execution to the transport, by one path.

::

    Execution ──► RunWriter (one per execution: one write at a time, deferral, retries, fencing)
                     │  a group: the commands of one run that travel together, in order
                     ▼
                  WritePipeline ──► CommandBatcher (groups of many runs → one CommandBatch)
                     │                  │
                     │ parking command  ▼
                     └─────────────► Transport.run_commands (HTTP or the local port)

A parking command (a held sleep's resume, answered only at the sleep's end) bypasses the batcher:
it travels alone, so that it holds up no other run's writes. A transport without an in-flight
limit (the local port: a call costs no request) has no batching stage either: each group is a
call of its own, answered as soon as its run's commands are applied. See ``_run_writer.py`` for
deferral.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiki.worker_sdk._batching import CommandBatcher
from aiki.worker_sdk._transport import Transport
from aiki.worker_sdk.protocol import Command, CommandResult


class WritePipeline:
    """Carries groups of commands to the transport: batched with other runs', or alone if one parks.

    Args:
        transport: Where the commands go.
        batch_max_bytes: The largest batch body the server takes (None: unknown).
    """

    def __init__(self, transport: Transport, batch_max_bytes: int | None = None) -> None:
        self._transport = transport
        self._batcher: CommandBatcher | None = None
        if transport.max_in_flight is not None:
            self._batcher = CommandBatcher(transport.run_commands, batch_max_bytes, transport.max_in_flight)

    async def send(self, commands: Sequence[Command]) -> list[CommandResult]:
        """Send ``commands`` (of one run, in order); one result each, in order."""
        if self._batcher is None or any(c.parks for c in commands):
            return await self._transport.run_commands(commands)
        return await self._batcher.submit(list(commands))

    def limit_batches(self, max_bytes: int) -> None:
        """The server takes batch bodies of at most ``max_bytes`` (learnt when a worker registers)."""
        if self._batcher is not None:
            self._batcher.max_bytes = max_bytes

    async def aclose(self) -> None:
        """Cancel the batches on their way."""
        if self._batcher is not None:
            await self._batcher.aclose()
