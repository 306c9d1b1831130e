"""A lean pool of asyncpg connections for the hot path.

``asyncpg.Pool`` wraps every acquired connection in a proxy, arms an inactivity timer on each
release and resets the session through a coroutine chain: about 50 µs of CPU per acquire and
release, several times per run. The hot path needs none of it: its connections never LISTEN,
SET, take session locks or keep cursors, and a transaction is always closed by its context
manager. This pool hands out bare connections and takes them back in a synchronous call.

A connection that comes back in any doubtful state (closed, still cancelling a query, inside a
transaction) is terminated rather than cleaned: that happens only after a cancelled or failed
call, and a fresh connection costs one connect.

It is the process's one pool of query connections: SQLAlchemy borrows from it too (``engine.py``),
so ``pool_size`` bounds them all. A caller waits for a connection at most ``timeout`` seconds, then
gets :class:`DatabaseUnavailable` (answered 503 with ``Retry-After``): under a burst, requests
queue for a bounded time instead of opening connections the database may refuse.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class DatabaseUnavailable(ConnectionError):
    """No database connection could be had: none came free in time, or the pool is closed."""


class HotPool:
    """At most ``max_size`` connections to ``dsn``; ``acquire`` waits for one when all are in use.

    Args:
        dsn: the asyncpg DSN.
        max_size: the most connections open at once, idle or in use.
        timeout: the longest ``acquire`` waits for a connection to come free (None: no limit).
    """

    def __init__(self, dsn: str, *, max_size: int, timeout: float | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {max_size}")
        self._dsn = dsn
        self._max_size = max_size
        self._timeout = timeout
        self._idle: list[Any] = []
        self._open = 0  # connections open or being opened, idle or in use
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._open

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def max_size(self) -> int:
        return self._max_size

    def resize(self, max_size: int) -> None:
        """Change the limit; idle connections beyond a lower one are closed at once, busy ones when released."""
        if max_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {max_size}")
        self._max_size = max_size
        while self._open > self._max_size and self._idle:
            self._idle.pop().terminate()
            self._open -= 1
        while self._open < self._max_size and self._hand_over(None):
            pass

    async def acquire(self) -> Any:
        if self._closed:
            raise DatabaseUnavailable("the database pool is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._open -= 1
        if self._open < self._max_size:
            return await self._connect()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self._timeout):
                conn = await fut
        except (asyncio.CancelledError, TimeoutError) as exc:
            handed_one = fut.done() and not fut.cancelled() and fut.exception() is None
            if not handed_one:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if isinstance(exc, TimeoutError):
                    raise DatabaseUnavailable(
                        f"no database connection came free within {self._timeout:g} s "
                        f"(all {self._max_size} of the pool are in use)"
                    ) from None
                raise
            if isinstance(exc, asyncio.CancelledError):
                # Handed a connection (or a free slot) just as we were cancelled: pass it on.
                handed = fut.result()
                if handed is None:
                    self._hand_over(None)
                else:
                    self.release(handed)
                raise
            conn = fut.result()  # handed one just as time ran out: take it
        if conn is None:  # a slot freed up (a connection was dropped): open our own
            return await self._connect()
        return conn

    async def _connect(self) -> Any:
        import asyncpg

        if self._closed:
            raise DatabaseUnavailable("the database pool is closed")
        self._open += 1
        try:
            if self._timeout is None:
                return await asyncpg.connect(self._dsn)
            return await asyncpg.connect(self._dsn, timeout=self._timeout)
        except BaseException:
            self._open -= 1
            self._hand_over(None)
            raise

    def release(self, conn: Any) -> None:
        """Take a connection back; a doubtful one is terminated and its slot freed."""
        protocol = conn._protocol
        doubtful = (
            conn.is_closed() or not protocol.is_connected() or protocol._is_cancelling() or protocol.is_in_transaction()
        )
        if doubtful or self._closed or self._open > self._max_size:  # the last: the pool was shrunk
            conn.terminate()
            self._open -= 1
            if self._open < self._max_size:
                self._hand_over(None)
            return
        if not self._hand_over(conn):
            self._idle.append(conn)

    def _hand_over(self, conn: Any) -> bool:
        """Give ``conn`` (or, with None, a free slot) to the first live waiter."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        await asyncio.gather(*(c.close() for c in idle), return_exceptions=True)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(DatabaseUnavailable("the database pool is closed"))
