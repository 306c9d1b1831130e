"""The database handle: one async engine, transactions, and the dialect's quirks in one place."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from aiki.platform.db.hot_pool import HotPool
from aiki.platform.db.raw import RawConn

DEFAULT_URL = "sqlite+aiosqlite:///aiki.db"


class ConfigurationError(ValueError):
    """A setting (URL, option) is malformed; the message names it."""


def normalize_url(url: str) -> str:
    """Accept the URLs people write and pick the async driver we ship.

    ``postgresql://`` and ``postgres://`` use asyncpg; ``sqlite:///`` uses aiosqlite.
    """
    if not url or "://" not in url:
        raise ConfigurationError(
            f"DATABASE_URL {url!r} is not a database URL "
            "(expected postgresql://user@host/db or sqlite+aiosqlite:///file.db)"
        )
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigurationError(f"DATABASE_URL scheme {scheme!r} is not supported (use postgresql or sqlite)")


class Database:
    """An async engine and the way every service opens a transaction.

    On SQLite one process holds one connection and transactions take turns behind an asyncio lock:
    SQLite has one writer anyway, and taking turns in Python avoids ``database is locked`` errors.
    """

    def __init__(self, url: str = DEFAULT_URL, *, pool_size: int = 20, migrate: bool = True, echo: bool = False):
        self.url = normalize_url(url)
        self.auto_migrate = migrate
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self._lock: asyncio.Lock | None = None
        self._engine: AsyncEngine | None = None
        self._pool_size = pool_size
        self._pool: HotPool | None = None
        self._echo = echo

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        if self.is_postgres:
            return create_async_engine(
                self.url,
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                pool_pre_ping=False,
                echo=self._echo,
            )
        engine = create_async_engine(
            self.url,
            # Readers run concurrently under WAL; writers take turns behind `_lock`.
            poolclass=AsyncAdaptedQueuePool,
            pool_size=4,
            max_overflow=4,
            pool_timeout=300,
            echo=self._echo,
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

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction: committed on success, rolled back on error."""
        if self.is_postgres:
            async with self.engine.begin() as conn:
                yield conn
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock, self.engine.connect() as conn:
            await conn.execution_options(aiki_write=True)
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[RawConn]:
        """One transaction on the driver connection, for the hot path (see ``raw.py``)."""
        if self.is_postgres:
            pool = self._hot_pool()
            driver = await pool.acquire()
            try:
                async with driver.transaction():
                    yield RawConn(driver, self.dialect)
            finally:
                pool.release(driver)
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock, self.engine.connect() as conn:
            driver = await _driver(conn)
            await driver.execute("BEGIN IMMEDIATE")
            try:
                yield RawConn(driver, self.dialect)
            except BaseException:
                await driver.execute("ROLLBACK")
                raise
            await driver.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def raw_read(self) -> AsyncIterator[RawConn]:
        """A driver connection for reads outside any transaction."""
        if self.is_postgres:
            pool = self._hot_pool()
            driver = await pool.acquire()
            try:
                yield RawConn(driver, self.dialect)
            finally:
                pool.release(driver)
            return
        async with self.engine.connect() as conn:
            driver = await _driver(conn)
            yield RawConn(driver, self.dialect)

    def _hot_pool(self) -> HotPool:
        if self._pool is None:
            self._pool = HotPool(self.driver_dsn, max_size=self._pool_size)
        return self._pool

    @property
    def driver_dsn(self) -> str:
        """The URL without SQLAlchemy's driver suffix (for asyncpg)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def ping(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._lock = None


async def _driver(conn: AsyncConnection) -> Any:
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # pragma: no cover - only after the pool was disposed
        raise RuntimeError("the database connection is closed")
    return driver


def database(url: str = DEFAULT_URL, *, pool_size: int = 20, migrate: bool = True) -> Database:
    """Describe the database the server keeps its state in.

    Args:
        url: ``postgresql://...`` (asyncpg) for production and several processes, or
            ``sqlite+aiosqlite:///file.db`` (the embedded default) for one process.
        pool_size: connections per process (PostgreSQL).
        migrate: apply pending schema migrations when the server runtime starts.

    Example:
        >>> db = database(url="sqlite+aiosqlite:///aiki.db")
        >>> db.dialect
        'sqlite'
    """
    return Database(url, pool_size=pool_size, migrate=migrate)
