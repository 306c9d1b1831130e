"""Shared fixtures: every core test runs on PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiki import client, server, worker
from aiki.platform.db.engine import Database
from tests import db_support

DATABASES = ("sqlite", "postgres")


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


class AikiHarness:
    """A running embedded server, an SDK client and a raw HTTP client on one fresh database."""

    def __init__(self, db: str, url: str, **server_options: Any) -> None:
        self.db = db
        self.url = url
        options: dict[str, Any] = {"lease_ttl": timedelta(seconds=5), "max_payload_bytes": 64 * 1024}
        options.update(server_options)
        self.server = server(db=Database(url, migrate=False), **options)
        self.handler = self.server.handler
        self.client = client(handler=self.handler)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.handler), base_url="http://aiki")
        self._workers: list[Any] = []

    async def start(self) -> AikiHarness:
        await self.server.runtime.start()
        return self

    async def worker(self, workflows: list[Any], *, concurrency: int = 10, **kw: Any) -> Any:
        handle = await worker(workflows=workflows, concurrency=concurrency, **kw).spawn(self.client)
        self._workers.append(handle)
        return handle

    async def close(self) -> None:
        for handle in self._workers:
            with contextlib.suppress(Exception):
                await handle.stop(grace=timedelta(seconds=1))
        await self.server.runtime.stop()
        await self.client.close()
        await self.http.aclose()
        await self.server.db.dispose()


@pytest.fixture
async def aiki(db_url: str) -> AsyncIterator[AikiHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await AikiHarness(kind, db_url).start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def aiki_suspending(db_url: str) -> AsyncIterator[AikiHarness]:
    """Like ``aiki``, but every sleep suspends its run (no sleep is held by its executor): for tests
    that use a short sleep to end an activation and see the next one replay."""
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await AikiHarness(kind, db_url, sleep_hold_max=timedelta(0)).start()
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
