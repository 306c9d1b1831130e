"""A server's database connections: at most ``--pool-size`` in all, and a full pool answers 503.

* ``aiki server --pool-size 2`` under a burst of 50 concurrent starts answers only 2xx or 503 (with
  ``Retry-After``), never 500; ``pg_stat_activity`` never shows more than 2 connections of it (the
  LISTEN connection is one of them); every start answered 2xx made its run, no 503 made one.
* PostgreSQL refusing connections ("too many connections", a database with a tiny CONNECTION
  LIMIT) is answered 503 as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.db_support import PG_ADMIN_DSN, pg_url
from tests.e2e.procs import ServerChild, WorkerProcs

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

BURST = 50


async def _register(http: httpx.AsyncClient, srv: ServerChild) -> None:
    body = {"worker_id": "pool-burst", "host": "t", "versions": [{"workflow": "pool-burst", "version": "1"}]}
    resp = await http.post(f"{srv.url}/api/v1/workers/register", json=body)
    assert resp.status_code == 200, resp.text


async def _burst(http: httpx.AsyncClient, srv: ServerChild) -> list[tuple[str, httpx.Response]]:
    """``BURST`` concurrent starts, each with its own reference id."""

    async def start(i: int) -> tuple[str, httpx.Response]:
        ref = f"burst-{i}"
        body = {"workflow": "pool-burst", "version": "1", "input": i, "reference_id": ref}
        return ref, await http.post(f"{srv.url}/api/v1/runs", json=body)

    return list(await asyncio.gather(*(start(i) for i in range(BURST))))


async def _runs_made(http: httpx.AsyncClient, srv: ServerChild) -> set[str]:
    # The listing itself may be answered 503 while the server's few connections are busy (its
    # background loops use them too): retry it as a client would.
    params = {"workflow": "pool-burst", "limit": "500"}
    for _ in range(100):
        resp = await http.get(f"{srv.url}/api/v1/runs", params=params)
        if resp.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert resp.status_code == 200, resp.text
    return {item["reference_id"] for item in resp.json()["items"]}


def _check_answers(answers: list[tuple[str, httpx.Response]]) -> tuple[set[str], int]:
    """Every answer is 2xx, or 503 with Retry-After; returns the references started and the 503 count."""
    unexpected = [(r.status_code, r.text[:200]) for _, r in answers if not (r.is_success or r.status_code == 503)]
    assert unexpected == [], unexpected
    for _, r in answers:
        if r.status_code == 503:
            assert r.headers.get("retry-after"), r.headers
            assert r.json()["code"] == "unavailable"
    return {ref for ref, r in answers if r.is_success}, sum(1 for _, r in answers if r.status_code == 503)


@contextlib.asynccontextmanager
async def _connection_sampler(dbname: str) -> AsyncIterator[list[int]]:
    """Counts the connections to ``dbname`` as often as it can until the block ends; yields the counts."""
    counts: list[int] = []
    conn = await asyncpg.connect(PG_ADMIN_DSN)  # on another database: it does not count itself
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            counts.append(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbname))

    task = asyncio.create_task(sample())
    try:
        yield counts
    finally:
        stop.set()
        await task
        await conn.close()


async def test_pool_size_2_under_a_burst_answers_2xx_or_503_with_at_most_2_connections(
    procs: WorkerProcs, e2e_db_url: str
) -> None:
    srv = await procs.start_server(pool_size=2, env={"AIKI_DB_POOL_TIMEOUT": "1"})
    dbname = e2e_db_url.rsplit("/", 1)[1]
    async with procs.http(timeout=60) as http:
        await _register(http, srv)
        async with _connection_sampler(dbname) as counts:
            answers = await _burst(http, srv)
            await asyncio.sleep(0)  # at least one sample after the burst
        started, _ = _check_answers(answers)
        assert await _runs_made(http, srv) == started  # no 503 left a run behind
    assert counts, "no sample taken"
    assert max(counts) <= 2, f"the server opened {max(counts)} connections with --pool-size 2"


@pytest.fixture
async def limited_db() -> AsyncIterator[tuple[str, str, str]]:
    """A database owned by a plain role (superusers ignore connection limits); name, URL, role."""
    suffix = uuid.uuid4().hex[:10]
    role, name = f"aiki_ops_limited_{suffix}", f"aiki_ops_limited_{suffix}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        yield name, pg_url(name).replace("postgres@", f"{role}@", 1), role
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_too_many_connections_from_postgresql_is_a_503(limited_db: tuple[str, str, str], tmp_path: Path) -> None:
    name, url, _ = limited_db
    assert "postgres@" not in url
    procs = WorkerProcs(tmp_path, url, tmp_path / "ledger.txt")
    try:
        srv = await procs.start_server(pool_size=5)
        async with procs.http(timeout=60) as http:
            await _register(http, srv)
            # From now on PostgreSQL refuses any connection beyond 2 to the database ("too many
            # connections for database"): the server has its LISTEN connection and a query
            # connection or two, and a burst needs more.
            admin = await asyncpg.connect(PG_ADMIN_DSN)
            try:
                await admin.execute(f'ALTER DATABASE "{name}" CONNECTION LIMIT 2')
            finally:
                await admin.close()
            answers = await _burst(http, srv)
            started, unavailable = _check_answers(answers)
            assert unavailable > 0, "the database refused no connection: the test proves nothing"
            assert await _runs_made(http, srv) == started
    finally:
        procs.cleanup()
        procs.dump()
