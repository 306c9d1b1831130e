"""The PostgreSQL database: one pool of asyncpg connections serves the hot path and SQLAlchemy."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from aiki.platform.db.engine import Database
from aiki.platform.db.errors import is_connection_failure
from aiki.platform.db.hot_pool import HotPool
from aiki.platform.db.postgres.conn import PgConn
from aiki.platform.db.postgres.executor import PostgresExecutorStore
from aiki.platform.db.wakeups import PgListener, WakeHub

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 0x41494B49


class _BorrowingPool(NullPool):
    """SQLAlchemy's pool on PostgreSQL: its connections are borrowed from the hot pool.

    One pool of ``pool_size`` connections then serves both SQL layers, so the process never opens
    more than that (plus the LISTEN connection, counted in ``pool_size`` too; see ``Database``). A
    checkout borrows a driver connection (waiting at most the pool timeout), a checkin gives it back.
    """

    give_back: Any = None  # set by PostgresDatabase: HotPool.release

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        driver = connection._connection  # SQLAlchemy's adapter around the asyncpg connection
        if terminate:
            driver.terminate()
        self.give_back(driver)

    def recreate(self) -> _BorrowingPool:
        pool = super().recreate()
        assert isinstance(pool, _BorrowingPool)
        pool.give_back = self.give_back
        return pool


class PostgresDatabase(Database):
    """PostgreSQL: the process opens at most ``pool_size`` connections in all.

    One pool serves the hot path (driver-level SQL) and SQLAlchemy (which borrows from it), and the
    runtime's LISTEN connection, when on, takes one of the ``pool_size``. A request waits at most
    ``pool_timeout`` seconds for a free connection, then fails with ``DatabaseUnavailable`` (503).
    """

    dialect: ClassVar[str] = "postgresql"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: HotPool | None = None
        self._lent: dict[int, HotPool] = {}  # connections SQLAlchemy borrowed, by id

    def _resize(self) -> None:
        if self._pool is not None:
            self._pool.resize(self._pool_size - self._reserved)

    def _create_engine(self) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            poolclass=_BorrowingPool,
            async_creator=self._borrow,
            pool_pre_ping=False,
            echo=self._echo,
            # SQL parameters are user data (emails, token hashes, run inputs): never in an
            # exception's message, so never in a log or traceback.
            hide_parameters=True,
        )
        pool = engine.sync_engine.pool
        assert isinstance(pool, _BorrowingPool)
        pool.give_back = self._give_back

        @sa.event.listens_for(engine.sync_engine, "handle_error")
        def _broken_session(context: Any) -> None:
            # SQLAlchemy takes only a closed socket for a disconnect; a session the server ended
            # (shutdown, restart) must not go back to the pool either: it would fail its next
            # user with "another operation is in progress". A disconnect is terminated.
            if is_connection_failure(context.original_exception):
                context.is_disconnect = True

        return engine

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    # Each of these is entered on every hot-path write: one generator each, no nested context manager.
    @contextlib.asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[PgConn]:
        pool = self._hot_pool()
        driver = await pool.acquire()
        try:
            async with driver.transaction():
                yield PgConn(driver)
        except BaseException as exc:
            _drop_if_broken(driver, exc)
            raise
        finally:
            pool.release(driver)

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[PgConn]:
        pool = self._hot_pool()
        driver = await pool.acquire()
        try:
            yield PgConn(driver)
        except BaseException as exc:
            _drop_if_broken(driver, exc)
            raise
        finally:
            pool.release(driver)

    def atomic(self) -> contextlib.AbstractAsyncContextManager[PgConn]:
        # The store writes such a call as one statement: atomic on its own.
        return self.autocommit()

    def executor_store(self, namespace_id: str) -> PostgresExecutorStore:
        return PostgresExecutorStore(self, namespace_id)

    def listener(self, hub: WakeHub) -> PgListener:
        return PgListener(self.driver_dsn, hub)

    async def lock_for_migration(self, conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})

    async def identity(self) -> str:
        # The cluster's system_identifier and the database name: every server that reaches the
        # same database, under whatever host name, computes the same id.
        async with self.autocommit() as conn:
            row = await conn.fetchrow(
                "SELECT system_identifier::text AS sid, current_database() AS name FROM pg_control_system()"
            )
        assert row is not None
        return f"pg:{row['sid']}:{row['name']}"

    def _hot_pool(self) -> HotPool:
        if self._pool is None:
            self._pool = HotPool(self.driver_dsn, max_size=self._pool_size - self._reserved, timeout=self._pool_timeout)
        return self._pool

    async def _borrow(self) -> Any:
        pool = self._hot_pool()
        driver = await pool.acquire()
        self._lent[id(driver)] = pool
        return driver

    def _give_back(self, driver: Any) -> None:
        # To the pool it came from: after dispose() that one is closed and terminates it.
        pool = self._lent.pop(id(driver), None)
        if pool is not None:
            pool.release(driver)
        else:
            driver.terminate()

    @property
    def driver_dsn(self) -> str:
        """The URL without SQLAlchemy's driver suffix (for asyncpg)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().dispose()


def _drop_if_broken(driver: Any, exc: BaseException) -> None:
    """Terminate a connection whose session failed (the server shut it down, the socket broke).

    asyncpg raises such an error as soon as it reads it, before it notices the socket closing:
    given back as it is, the connection would look healthy and fail its next user with "another
    operation is in progress".
    """
    if is_connection_failure(exc):
        driver.terminate()
