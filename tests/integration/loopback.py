"""An embedded server's app served on a real loopback socket, for ``client(url=...)`` tests.

uvicorn runs in the test's own event loop (no process), so the test drives the same services in
process and over HTTP: the SDK's aiohttp backend, the routes, problem+json, batching, long polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import uvicorn

from aiki import Client, client, worker
from tests.conftest import AikiHarness

MODES = ("port", "http")
"""``port``: ``client(handler=...)`` (the embedded local port); ``http``: ``client(url=...)`` on a socket."""


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the duration; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Env:
    """A harness (embedded server on one database) and the SDK client of one mode."""

    aiki: AikiHarness
    mode: str
    client: Client
    workers: list[Any] = field(default_factory=list)

    async def worker(self, workflows: list[Any], **options: Any) -> Any:
        options.setdefault("concurrency", 10)
        handle = await worker(workflows=workflows, **options).spawn(self.client)
        self.workers.append(handle)
        return handle


@contextlib.asynccontextmanager
async def open_env(db_url: str, mode: str, **server_options: Any) -> AsyncIterator[Env]:
    """A started harness on ``db_url`` and a client of ``mode``; everything stopped afterwards."""
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await AikiHarness(kind, db_url, **server_options).start()
    try:
        if mode == "port":
            env = Env(harness, mode, harness.client)
            try:
                yield env
            finally:
                await _stop_workers(env)
            return
        async with serve(harness.handler) as url:
            env = Env(harness, mode, client(url=url))
            try:
                yield env
            finally:
                await _stop_workers(env)
                await env.client.close()
    finally:
        await harness.close()


async def _stop_workers(env: Env) -> None:
    for handle in env.workers:
        with contextlib.suppress(Exception):
            await handle.stop(grace=timedelta(seconds=1))
