"""Shared fixtures: every core test runs on PostgreSQL and on SQLite.

The core integration tests (``tests/integration/``) also run over both ways an SDK client reaches a
server: the in-process local port (``client(handler=...)``) and HTTP on a real loopback socket
(``client(url=...)``: aiohttp, workers writing in batches), as users run it. ``tests/integration/
conftest.py`` parametrizes the ``transport`` fixture for that; elsewhere it is ``"port"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from aiki import client, server, worker
from aiki.platform.db.engine import Database
from tests import db_support

DATABASES = ("sqlite", "postgres")
TRANSPORTS = ("port", "http")
"""How the harness's SDK client reaches its server: the in-process local port, or HTTP on loopback."""


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One migrated PostgreSQL database for this test process."""
    name = asyncio.run(db_support.create_pg_database())
    yield name
    asyncio.run(db_support.drop_pg_database(name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(db_support.create_sqlite_template(path))
    return path


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database of each kind."""
    if request.param == "postgres":
        name = request.getfixturevalue("pg_database")
        asyncio.run(db_support.truncate_pg(name))
        return db_support.pg_url(name)
    template = request.getfixturevalue("sqlite_template")
    return db_support.copy_sqlite(template, tmp_path / "aiki.db")


@pytest.fixture
def transport() -> str:
    """How the harness's client reaches its server (see ``TRANSPORTS``); ``tests/integration`` runs both."""
    return "port"


class _LoopbackUvicorn(uvicorn.Server):
    """uvicorn serving an app in the test's own event loop (where the server's runtime and database
    pools live), on a socket bound beforehand; it says when it is serving."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # pytest owns the signals (Ctrl-C must stop the run, not this server).
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LoopbackHttp:
    """An ASGI app served over HTTP on ``127.0.0.1`` (a free port), in the running event loop."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            # The app's only startup hook builds the OpenAPI document (~60 ms a test, unused here);
            # the runtime is started by the harness, as `aiki server` does around uvicorn.
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            # Above the SDK's 4 s keep-alive, as in `aiki server`.
            timeout_keep_alive=10,
            # At teardown, cut off requests still parked (a stopped worker's long-poll claim stays
            # parked on the server until its wait ends): the test is over.
            timeout_graceful_shutdown=0.1,
        )
        self._server = _LoopbackUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        ready = asyncio.create_task(self._server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not self._server.ready.is_set():
            ready.cancel()
            await self._task  # raises what kept it from serving
            raise RuntimeError(f"uvicorn did not serve on {self.url}")

    async def stop(self) -> None:
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._task

    def connections(self) -> int:
        """Client connections open now; a closed one leaves once uvicorn noticed (and told the app,
        whose ``receive()`` then answers ``http.disconnect``)."""
        return len(self._server.server_state.connections)


class AikiHarness:
    """A running embedded server, an SDK client and a raw HTTP client on one fresh database.

    ``transport="port"``: the SDK client calls the server in-process (``client(handler=...)``).
    ``transport="http"``: the server is also served on a loopback socket and the SDK client (and so
    every worker spawned with :meth:`worker`) talks to it over HTTP (``client(url=...)``).
    :attr:`http` always calls the ASGI app in-process, to inspect the API directly.
    """

    def __init__(self, db: str, url: str, *, transport: str = "port", **server_options: Any) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        self.db = db
        self.url = url
        self.transport = transport
        options: dict[str, Any] = {"lease_ttl": timedelta(seconds=5), "max_payload_bytes": 64 * 1024}
        options.update(server_options)
        self.server = server(db=Database(url, migrate=False), **options)
        self.handler = self.server.handler
        self.loopback = LoopbackHttp(self.handler) if transport == "http" else None
        self.client = client(url=self.loopback.url) if self.loopback else client(handler=self.handler)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.handler), base_url="http://aiki")
        self._workers: list[Any] = []

    async def start(self) -> AikiHarness:
        await self.server.runtime.start()
        if self.loopback is not None:
            await self.loopback.start()
        return self

    async def worker(self, workflows: list[Any], *, concurrency: int = 10, **kw: Any) -> Any:
        handle = await worker(workflows=workflows, concurrency=concurrency, **kw).spawn(self.client)
        self._workers.append(handle)
        return handle

    async def close(self) -> None:
        for handle in self._workers:
            with contextlib.suppress(Exception):
                await handle.stop(grace=timedelta(seconds=1))
        await self.client.close()
        if self.loopback is not None:
            await self.loopback.stop()
        await self.server.runtime.stop()
        await self.http.aclose()
        await self.server.db.dispose()


def _kind(db_url: str) -> str:
    return "postgres" if db_url.startswith("postgresql") else "sqlite"


@pytest.fixture
async def aiki(db_url: str, transport: str) -> AsyncIterator[AikiHarness]:
    harness = await AikiHarness(_kind(db_url), db_url, transport=transport).start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def make_aiki(db_url: str, transport: str) -> AsyncIterator[Callable[..., Awaitable[AikiHarness]]]:
    """Start a harness with server options of the test's own (``make_aiki(lease_ttl=...)``), on the
    test's database and transport; every one started is closed after the test."""
    started: list[AikiHarness] = []

    async def make(**server_options: Any) -> AikiHarness:
        harness = AikiHarness(_kind(db_url), db_url, transport=transport, **server_options)
        started.append(harness)
        return await harness.start()

    try:
        yield make
    finally:
        for harness in reversed(started):
            await harness.close()


@pytest.fixture
async def aiki_suspending(db_url: str, transport: str) -> AsyncIterator[AikiHarness]:
    """Like ``aiki``, but every sleep suspends its run (no sleep is held by its executor): for tests
    that use a short sleep to end an activation and see the next one replay."""
    harness = await AikiHarness(_kind(db_url), db_url, transport=transport, sleep_hold_max=timedelta(0)).start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def iam_aiki(db_url: str) -> AsyncIterator[Any]:
    """Like ``aiki``, with IAM on (``tests/iam_support.py``): every request needs credentials."""
    from tests.iam_support import IamHarness

    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url).start()
    try:
        yield harness
    finally:
        await harness.close()
