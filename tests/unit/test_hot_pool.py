"""HotPool on a real PostgreSQL: reuse, the size limit, waiters, doubtful connections and close().

The tests connect to the admin database and create nothing but temporary tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aiki.platform.db.engine import Database
from aiki.platform.db.hot_pool import DatabaseUnavailable, HotPool
from tests.db_support import PG_ADMIN_DSN, pg_url

TIMEOUT = 5.0


class Pools:
    """Makes pools and remembers every pool and connection, so a failing test leaks nothing."""

    def __init__(self) -> None:
        self.pools: list[HotPool] = []
        self.conns: list[Any] = []

    def new(self, max_size: int, dsn: str = PG_ADMIN_DSN) -> HotPool:
        pool = HotPool(dsn, max_size=max_size)
        self.pools.append(pool)
        return pool

    async def acquire(self, pool: HotPool) -> Any:
        conn = await pool.acquire()
        self.conns.append(conn)
        return conn

    def waiter(self, pool: HotPool) -> asyncio.Task[Any]:
        return asyncio.create_task(self.acquire(pool))

    async def cleanup(self) -> None:
        for pool in self.pools:
            await pool.close()
        for conn in self.conns:
            if not conn.is_closed():
                conn.terminate()


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    made = Pools()
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        yield conn
    finally:
        await conn.close()


async def assert_still_waiting(task: asyncio.Task[Any]) -> None:
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done, "acquire should still be waiting for a connection"


async def kill_backend(admin: Any, conn: Any) -> None:
    """Terminate ``conn``'s server process and wait until the client has seen the socket close."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid()) is True
    await asyncio.wait_for(lost.wait(), TIMEOUT)
    assert conn.is_closed()


async def test_a_released_healthy_connection_is_reused(pools: Pools) -> None:
    pool = pools.new(max_size=3)
    first = await pools.acquire(pool)
    pid = first.get_server_pid()
    assert (pool.size, pool.idle) == (1, 0)
    pool.release(first)
    assert (pool.size, pool.idle) == (1, 1)

    again = await pools.acquire(pool)
    assert again is first
    assert again.get_server_pid() == pid
    assert await again.fetchval("SELECT pg_backend_pid()") == pid
    assert (pool.size, pool.idle) == (1, 0)
    pool.release(again)
    assert pool.size == 1


async def test_acquire_waits_at_max_size_and_gets_the_first_released_connection(pools: Pools) -> None:
    pool = pools.new(max_size=2)
    a = await pools.acquire(pool)
    b = await pools.acquire(pool)
    assert a is not b
    assert pool.size == 2

    third = pools.waiter(pool)
    await assert_still_waiting(third)
    assert pool.size == 2

    pool.release(b)
    pool.release(a)  # nobody waits any more: this one goes idle
    got = await asyncio.wait_for(third, TIMEOUT)
    assert got is b
    assert (pool.size, pool.idle) == (2, 1)
    assert await got.fetchval("SELECT 1") == 1
    pool.release(got)
    assert (pool.size, pool.idle) == (2, 2)


async def test_a_cancelled_waiter_does_not_take_a_connection(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    waiter = pools.waiter(pool)
    await assert_still_waiting(waiter)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, TIMEOUT)
    assert not pool._waiters  # the cancelled waiter left the queue (no leak under repeated timeouts)

    pool.release(held)
    assert (pool.size, pool.idle) == (1, 1)
    assert await asyncio.wait_for(pools.acquire(pool), TIMEOUT) is held


async def test_a_waiter_cancelled_after_a_connection_was_handed_to_it_passes_it_on(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    waiter = pools.waiter(pool)
    await assert_still_waiting(waiter)

    pool.release(held)  # handed to the waiter, which has not run yet...
    waiter.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, TIMEOUT)

    assert (pool.size, pool.idle) == (1, 1)
    assert await asyncio.wait_for(pools.acquire(pool), TIMEOUT) is held


async def test_a_waiter_cancelled_after_a_slot_was_handed_to_it_passes_the_slot_on(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    waiter = pools.waiter(pool)
    await assert_still_waiting(waiter)

    await held.execute("BEGIN")
    pool.release(held)  # terminated: the waiter is handed the free slot (None)...
    waiter.cancel()  # ...and is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, TIMEOUT)

    assert (pool.size, pool.idle) == (0, 0)
    conn = await asyncio.wait_for(pools.acquire(pool), TIMEOUT)
    assert await conn.fetchval("SELECT 1") == 1
    pool.release(conn)


async def test_a_slot_handed_to_a_cancelled_waiter_reaches_the_next_waiter(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    first = pools.waiter(pool)
    second = pools.waiter(pool)
    await assert_still_waiting(first)
    await assert_still_waiting(second)

    await held.execute("BEGIN")
    pool.release(held)  # terminated: the first waiter is handed the free slot...
    first.cancel()  # ...and is cancelled before it runs: the slot must go to the second
    await asyncio.wait({first}, timeout=TIMEOUT)
    assert first.done()
    if not first.cancelled():
        first.exception()  # retrieved (the bug turns the cancellation into an AttributeError)

    conn = await asyncio.wait_for(second, 1.0)
    assert await conn.fetchval("SELECT 1") == 1
    assert pool.size == 1
    pool.release(conn)


async def test_a_connection_released_inside_a_transaction_is_terminated(pools: Pools) -> None:
    pool = pools.new(max_size=2)
    a = await pools.acquire(pool)
    b = await pools.acquire(pool)
    pid_a = a.get_server_pid()
    await a.execute("BEGIN")
    await a.execute("CREATE TEMP TABLE hot_pool_probe (x int)")
    assert pool.size == 2

    pool.release(a)
    assert a.is_closed()
    assert (pool.size, pool.idle) == (1, 0)

    c = await asyncio.wait_for(pools.acquire(pool), TIMEOUT)
    assert c is not a
    assert c.get_server_pid() not in (pid_a, b.get_server_pid())
    assert not c.is_in_transaction()
    assert await c.fetchval("SELECT to_regclass('pg_temp.hot_pool_probe')") is None
    assert pool.size == 2
    pool.release(b)
    pool.release(c)
    assert (pool.size, pool.idle) == (2, 2)


async def test_a_connection_killed_by_the_server_while_idle_is_not_handed_out(pools: Pools, admin: Any) -> None:
    pool = pools.new(max_size=1)
    conn = await pools.acquire(pool)
    pid = conn.get_server_pid()
    pool.release(conn)
    assert pool.idle == 1

    await kill_backend(admin, conn)

    fresh = await asyncio.wait_for(pools.acquire(pool), TIMEOUT)
    assert fresh is not conn
    assert fresh.get_server_pid() != pid
    assert await fresh.fetchval("SELECT 1") == 1
    assert (pool.size, pool.idle) == (1, 0)
    pool.release(fresh)
    assert (pool.size, pool.idle) == (1, 1)


async def test_a_connection_killed_while_in_use_is_dropped_on_release(pools: Pools, admin: Any) -> None:
    pool = pools.new(max_size=1)
    conn = await pools.acquire(pool)
    await kill_backend(admin, conn)

    pool.release(conn)
    assert (pool.size, pool.idle) == (0, 0)
    fresh = await asyncio.wait_for(pools.acquire(pool), TIMEOUT)
    assert await fresh.fetchval("SELECT 1") == 1
    pool.release(fresh)


async def test_a_waiter_gets_a_fresh_connection_when_the_released_one_is_terminated(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    pid = held.get_server_pid()
    waiter = pools.waiter(pool)
    await assert_still_waiting(waiter)

    await held.execute("BEGIN")
    pool.release(held)
    assert held.is_closed()

    fresh = await asyncio.wait_for(waiter, TIMEOUT)
    assert fresh is not held
    assert fresh.get_server_pid() != pid
    assert await fresh.fetchval("SELECT 1") == 1
    assert pool.size == 1
    pool.release(fresh)
    assert (pool.size, pool.idle) == (1, 1)


async def test_close_closes_idle_connections_and_refuses_new_acquires(pools: Pools) -> None:
    pool = pools.new(max_size=3)
    a = await pools.acquire(pool)
    b = await pools.acquire(pool)
    in_use = await pools.acquire(pool)
    pool.release(a)
    pool.release(b)
    assert (pool.size, pool.idle) == (3, 2)

    await asyncio.wait_for(pool.close(), TIMEOUT)
    assert a.is_closed()
    assert b.is_closed()
    assert (pool.size, pool.idle) == (1, 0)
    assert not in_use.is_closed()  # close() leaves a connection in use to its holder

    pool.release(in_use)  # released after close: terminated, not kept
    assert in_use.is_closed()
    assert (pool.size, pool.idle) == (0, 0)

    with pytest.raises(DatabaseUnavailable, match="closed"):
        await pool.acquire()
    assert pool.size == 0


async def test_close_fails_a_waiter(pools: Pools) -> None:
    pool = pools.new(max_size=1)
    held = await pools.acquire(pool)
    waiter = pools.waiter(pool)
    await assert_still_waiting(waiter)

    await asyncio.wait_for(pool.close(), TIMEOUT)
    with pytest.raises(DatabaseUnavailable, match="closed"):
        await asyncio.wait_for(waiter, TIMEOUT)

    pool.release(held)
    assert held.is_closed()
    assert (pool.size, pool.idle) == (0, 0)


async def test_a_failed_connect_raises_and_frees_its_slot(pools: Pools) -> None:
    pool = pools.new(max_size=1, dsn=pg_url("aiki_hot_pool_no_such_database"))
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncio.wait_for(pool.acquire(), TIMEOUT)
    assert (pool.size, pool.idle) == (0, 0)

    # A second acquire is not refused for want of a slot: it tries (and fails) to connect again.
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncio.wait_for(pool.acquire(), TIMEOUT)
    assert pool.size == 0


async def test_a_failed_connect_hands_its_slot_to_a_waiter(pools: Pools) -> None:
    pool = pools.new(max_size=1, dsn=pg_url("aiki_hot_pool_no_such_database"))
    first = pools.waiter(pool)
    second = pools.waiter(pool)  # queued: the first holds the only slot while it connects
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), TIMEOUT)
    assert [type(r) for r in results] == [asyncpg.InvalidCatalogNameError] * 2
    assert (pool.size, pool.idle) == (0, 0)


async def test_database_autocommit_after_a_failed_raw_transaction_reuses_the_one_connection() -> None:
    db = Database(PG_ADMIN_DSN, migrate=False)
    pids: list[int] = []

    async def fail_inside_a_transaction() -> None:
        async with db.raw_transaction() as conn:
            await conn.execute("CREATE TEMP TABLE hot_pool_probe (x int)")
            pids.append(conn.driver.get_server_pid())
            raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await fail_inside_a_transaction()

        pool = db._pool
        assert pool is not None
        assert (pool.size, pool.idle) == (1, 1)  # rolled back, not terminated

        async with db.autocommit() as conn:
            assert conn.driver.get_server_pid() == pids[0]
            assert await conn.fetchval("SELECT to_regclass('pg_temp.hot_pool_probe')") is None
            assert await conn.fetchval("SELECT 1") == 1
        assert (pool.size, pool.idle) == (1, 1)
    finally:
        await db.dispose()


def _fatal_error_response(code: str, message: str) -> bytes:
    fields = b"".join(tag + value.encode() + b"\0" for tag, value in ((b"S", "FATAL"), (b"C", code), (b"M", message)))
    body = fields + b"\0"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


async def test_a_connection_the_server_shut_down_while_idle_fails_once_as_unavailable_and_is_dropped() -> None:
    """A PostgreSQL restart sends FATAL 57P01 to every idle connection, then closes it. asyncpg
    reads the error in its idle state and sticks in "error consume" until it notices the socket
    closing; a query in between failed with InternalClientError ("cannot switch to state 12;
    another operation (2) is in progress"), was answered 500 and left the connection in the pool."""
    from aiki.platform.db.raw import is_connection_failure

    db = Database(PG_ADMIN_DSN, migrate=False)
    try:
        async with db.autocommit() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            driver = conn.driver
        pool = db._pool
        assert pool is not None
        assert (pool.size, pool.idle) == (1, 1)
        # The FATAL message, as the server sends it, before the end of the stream is read.
        driver._protocol.data_received(
            _fatal_error_response("57P01", "terminating connection due to administrator command")
        )
        assert not driver.is_closed()

        async def query_on_the_pooled_connection() -> None:
            async with db.autocommit() as conn:
                assert conn.driver is driver
                await conn.fetchval("SELECT 1")

        with pytest.raises(asyncpg.InternalClientError) as failed:
            await query_on_the_pooled_connection()
        # Answered 503 with Retry-After by the API (a connection failure), and never used again.
        assert is_connection_failure(failed.value)
        assert driver.is_closed()
        assert (pool.size, pool.idle) == (0, 0)
        async with db.autocommit() as conn:
            assert conn.driver is not driver
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await db.dispose()
