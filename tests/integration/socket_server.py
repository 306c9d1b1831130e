"""An Aiki server's app served by uvicorn on a real loopback socket, in the test's event loop.

For tests that must go over the network path (``client(url=...)``, the aiohttp backend, real
connections that a client can close) without the cost of a server process: the server runs in
this process, so the test can still look at its state (parked claims, settings, the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    # The test process owns the signals (pytest's Ctrl-C must still work).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Served:
    """Where the app listens, and a view of the server's open connections."""

    url: str
    _server: uvicorn.Server

    def connections(self) -> int:
        """Client connections open now; a closed one leaves once the server noticed (and told the
        app, whose ``receive()`` then answers ``http.disconnect``)."""
        return len(self._server.server_state.connections)


@contextlib.asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[Served]:
    """Serve ``handler`` (``server(...).handler``) on 127.0.0.1.

    The server's runtime is not started here: the harness that built it does that.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        handler,
        log_level="warning",
        lifespan="on",
        access_log=False,
        # Parked long-polls would otherwise hold the shutdown for their whole wait.
        timeout_graceful_shutdown=1,
    )
    srv = _Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not srv.started:  # uvicorn exposes readiness only as a flag
                if task.done():
                    await task
                    raise AssertionError("uvicorn stopped before it started serving")
                await asyncio.sleep(0.01)
        yield Served(f"http://127.0.0.1:{port}", srv)
    finally:
        srv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()
