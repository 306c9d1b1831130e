"""The worker side of a client: the worker protocol and the write pipeline, apart from the user API.

A :class:`~aiki.worker_sdk.client.Client` is what users start and query runs with. A worker (and
each execution it runs) talks to the server through a :class:`WorkerConnection` built on the same
client's transport: registration, claims, heartbeats, watches, releases, and the executor's writes
as commands through one :class:`~aiki.worker_sdk._pipeline.WritePipeline`. :func:`connect` gives a
client's connection (one per client, closed with it), so the workers of one client share batches.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

from aiki.worker_sdk._pipeline import WritePipeline
from aiki.worker_sdk._run_writer import RunWriter
from aiki.worker_sdk._transport import Transport
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.protocol import (
    Activation,
    ClaimRequest,
    ClaimResponse,
    Command,
    CommandResult,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReleaseRequest,
    ReleaseResponse,
    WatchRequest,
    WatchResponse,
)


class WorkerConnection:
    """The worker protocol over one transport.

    Attributes:
        payload_max_bytes: The server's request size limit, learnt when a worker registers (None: unknown).
        sleep_hold_max_ms: The longest sleep the server lets an executor hold in memory (None: none).
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.pipeline = WritePipeline(transport)
        self.payload_max_bytes: int | None = None
        self.sleep_hold_max_ms: int | None = None

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        """``POST /workers/register``; learns the server's limits for the pipeline."""
        response = await self.transport.register_worker(request)
        if response.batch_max_bytes:
            self.pipeline.limit_batches(response.batch_max_bytes)
        self.payload_max_bytes = response.payload_max_bytes
        self.sleep_hold_max_ms = response.sleep_hold_max_ms
        return response

    async def claim(self, request: ClaimRequest) -> ClaimResponse:
        """``POST /workers/claim`` (long-polls up to ``request.wait_ms``)."""
        return await self.transport.claim(request)

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        """``POST /workers/heartbeat``."""
        return await self.transport.heartbeat(request)

    async def watch(self, request: WatchRequest) -> WatchResponse:
        """``POST /workers/watch`` (long-polls up to ``request.wait_ms``)."""
        return await self.transport.watch(request)

    async def release(self, request: ReleaseRequest) -> ReleaseResponse:
        """``POST /workers/release``: a stopping worker hands back the runs it holds."""
        return await self.transport.release(request)

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]:
        """Send ``commands`` (of one run, in order) through the pipeline: one result each, unraised."""
        return await self.pipeline.send(commands)

    def writer(
        self,
        activation: Activation,
        *,
        retry_budget: float,
        claimed_at: float | None,
        worker_id: str | None,
        may_hold: Callable[[], bool] | None,
        paused: Callable[[], None],
    ) -> RunWriter:
        """The pipeline's end for one execution of ``activation`` (claimed at ``claimed_at``, monotonic).

        With ``worker_id`` the writer confirms the lease by a heartbeat before a task runs when nothing
        renewed it for a whole TTL; ``may_hold`` says whether a short sleep may be held now (the worker has
        a free slot); ``paused`` is called when a record's answer says a pause is requested.
        """
        hold_max = self.sleep_hold_max_ms
        return RunWriter(
            self.pipeline,
            activation.run_id,
            activation.revision,
            retry_budget=retry_budget,
            payload_max_bytes=self.payload_max_bytes,
            lease_ttl_ms=activation.lease_ttl_ms,
            claimed_at=claimed_at,
            heartbeat=None if worker_id is None else (worker_id, self.heartbeat),
            sleep_hold=None if may_hold is None or hold_max is None else (hold_max, may_hold),
            paused=paused,
        )

    async def aclose(self) -> None:
        """Cancel the writes on their way."""
        await self.pipeline.aclose()


_connections: weakref.WeakKeyDictionary[Client, WorkerConnection] = weakref.WeakKeyDictionary()


def connect(client: Client) -> WorkerConnection:
    """The worker connection of ``client`` (made on first use, closed with the client)."""
    connection = _connections.get(client)
    if connection is None:
        connection = _connections[client] = WorkerConnection(client.transport)
        client.close_with(connection.aclose)
    return connection
