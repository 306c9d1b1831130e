"""The SQLite database: one writer at a time, taking turns behind an asyncio lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from aiki.platform.db.engine import Database
from aiki.platform.db.sqlite.conn import SqliteConn
from aiki.platform.db.sqlite.executor import SqliteExecutorStore
from aiki.platform.db.wakeups import WakeHub


def _quiet_aiosqlite() -> None:
    """aiosqlite logs every statement with its parameters (user data) at DEBUG: never let it.

    Left alone when someone set its level on purpose.
    """
    aiosqlite_log = logging.getLogger("aiosqlite")
    if aiosqlite_log.level == logging.NOTSET:
        aiosqlite_log.setLevel(logging.INFO)


class SqliteDatabase(Database):
    """SQLite: transactions take turns behind an asyncio lock.

    SQLite has one writer anyway, and taking turns in Python avoids ``database is locked`` errors.
    Readers run concurrently under WAL.
    """

    dialect: ClassVar[str] = "sqlite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock: asyncio.Lock | None = None

    def _create_engine(self) -> AsyncEngine:
        _quiet_aiosqlite()
        engine = create_async_engine(
            self.url,
            # Readers run concurrently under WAL; writers take turns behind `_lock`.
            poolclass=AsyncAdaptedQueuePool,
            pool_size=4,
            max_overflow=4,
            pool_timeout=300,
            echo=self._echo,
            hide_parameters=True,  # SQL parameters are user data: never in an exception's message
            connect_args={"timeout": 30},
        )

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (BEGIN IMMEDIATE below).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the write lock up front: a deferred transaction that later writes can
            # fail with SQLITE_BUSY when another process wrote in between. Readers stay deferred.
            write = conn.get_execution_options().get("aiki_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _writer_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer_lock(), self.engine.connect() as conn:
            await conn.execution_options(aiki_write=True)
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[SqliteConn]:
        async with self._writer_lock(), self.engine.connect() as conn:
            driver = await _driver(conn)
            await driver.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteConn(driver)
            except BaseException:
                await driver.execute("ROLLBACK")
                raise
            await driver.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SqliteConn]:
        async with self.engine.connect() as conn:
            yield SqliteConn(await _driver(conn))

    def atomic(self) -> contextlib.AbstractAsyncContextManager[SqliteConn]:
        # The store takes several statements for such a call: they share one transaction.
        return self.raw_transaction()

    def executor_store(self, namespace_id: str) -> SqliteExecutorStore:
        return SqliteExecutorStore(self, namespace_id)

    def listener(self, hub: WakeHub) -> None:
        return None  # one process: its hub hears every wake-up already

    async def lock_for_migration(self, conn: AsyncConnection) -> None:
        return None  # the migration's write transaction is exclusive already

    async def identity(self) -> str:
        return f"sqlite:{self.engine.url.database}"

    async def dispose(self) -> None:
        await super().dispose()
        self._lock = None


async def _driver(conn: AsyncConnection) -> Any:
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # pragma: no cover - only after the pool was disposed
        raise RuntimeError("the database connection is closed")
    return driver
