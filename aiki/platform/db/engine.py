"""The database handle: one async engine, transactions, and the dialect's quirks in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from aiki.platform.db.hot_pool import DatabaseUnavailable, HotPool
from aiki.platform.db.raw import RawConn, is_connection_failure

DEFAULT_URL = "sqlite+aiosqlite:///aiki.db"
DEFAULT_POOL_SIZE = 20
DEFAULT_POOL_TIMEOUT_S = 10.0

__all__ = ["ConfigurationError", "Database", "DatabaseUnavailable", "database", "normalize_url"]


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


class _BorrowingPool(NullPool):
    """SQLAlchemy's pool on PostgreSQL: its connections are borrowed from the hot pool.

    One pool of ``pool_size`` connections then serves both SQL layers, so the process never opens
    more than that (plus the LISTEN connection, counted in ``pool_size`` too; see ``Database``). A
    checkout borrows a driver connection (waiting at most the pool timeout), a checkin gives it back.
    """

    give_back: Any = None  # set by Database: HotPool.release

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


def _quiet_aiosqlite() -> None:
    """aiosqlite logs every statement with its parameters (user data) at DEBUG: never let it.

    Left alone when someone set its level on purpose.
    """
    aiosqlite_log = logging.getLogger("aiosqlite")
    if aiosqlite_log.level == logging.NOTSET:
        aiosqlite_log.setLevel(logging.INFO)


class Database:
    """An async engine and the way every service opens a transaction.

    On SQLite one process holds one connection and transactions take turns behind an asyncio lock:
    SQLite has one writer anyway, and taking turns in Python avoids ``database is locked`` errors.

    On PostgreSQL the process opens at most ``pool_size`` connections in all: one pool serves the
    hot path (driver-level SQL) and SQLAlchemy (which borrows from it), and the runtime's LISTEN
    connection, when on, takes one of the ``pool_size``. A request waits at most ``pool_timeout``
    seconds for a free connection, then fails with :class:`DatabaseUnavailable` (503).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
        migrate: bool = True,
        echo: bool = False,
    ):
        self.url = normalize_url(url)
        self.auto_migrate = migrate
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, got {pool_size}")
        if not pool_timeout > 0:
            raise ConfigurationError(f"pool_timeout must be a positive number of seconds, got {pool_timeout}")
        self._lock: asyncio.Lock | None = None
        self._engine: AsyncEngine | None = None
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._reserved = 0  # connections of the budget held outside the pool (the LISTEN one)
        self._pool: HotPool | None = None
        self._lent: dict[int, HotPool] = {}  # connections SQLAlchemy borrowed, by id
        self._echo = echo

    @property
    def pool_size(self) -> int:
        """The most connections this process opens to the database (PostgreSQL)."""
        return self._pool_size

    def reserve_connection(self, purpose: str) -> None:
        """Take one connection of ``pool_size`` out of the pool for a dedicated use (LISTEN).

        Raises:
            ConfigurationError: ``pool_size`` leaves no connection for queries.
        """
        if self._pool_size - self._reserved < 2:
            raise ConfigurationError(
                f"pool_size {self._pool_size} leaves no connection for queries beside {purpose}: "
                "give a pool size of at least 2 (--pool-size / AIKI_DB_POOL_SIZE), or turn LISTEN off"
            )
        self._reserved += 1
        if self._pool is not None:
            self._pool.resize(self._pool_size - self._reserved)

    def unreserve_connection(self) -> None:
        """Give back a connection taken by :meth:`reserve_connection`."""
        self._reserved = max(0, self._reserved - 1)
        if self._pool is not None:
            self._pool.resize(self._pool_size - self._reserved)

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
        _quiet_aiosqlite()
        engine = create_async_engine(
            self.url,
            # Readers run concurrently under WAL; writers take turns behind `_lock`.
            poolclass=AsyncAdaptedQueuePool,
            pool_size=4,
            max_overflow=4,
            pool_timeout=300,
            echo=self._echo,
            hide_parameters=True,  # as above: no user data in exception messages
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
            except BaseException as exc:
                _drop_if_broken(driver, exc)
                raise
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
            except BaseException as exc:
                _drop_if_broken(driver, exc)
                raise
            finally:
                pool.release(driver)
            return
        async with self.engine.connect() as conn:
            driver = await _driver(conn)
            yield RawConn(driver, self.dialect)

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


def _drop_if_broken(driver: Any, exc: BaseException) -> None:
    """Terminate a connection whose session failed (the server shut it down, the socket broke).

    asyncpg raises such an error as soon as it reads it, before it notices the socket closing:
    given back as it is, the connection would look healthy and fail its next user with "another
    operation is in progress".
    """
    if is_connection_failure(exc):
        driver.terminate()


async def _driver(conn: AsyncConnection) -> Any:
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # pragma: no cover - only after the pool was disposed
        raise RuntimeError("the database connection is closed")
    return driver


def database(
    url: str = DEFAULT_URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_timeout: timedelta = timedelta(seconds=DEFAULT_POOL_TIMEOUT_S),
    migrate: bool = True,
) -> Database:
    """Describe the database the server keeps its state in.

    Args:
        url: ``postgresql://...`` (asyncpg) for production and several processes, or
            ``sqlite+aiosqlite:///file.db`` (the embedded default) for one process.
        pool_size: the most connections the process opens to PostgreSQL, all uses together: the
            queries of requests and background loops share one pool, and the server's LISTEN
            connection (``server(pg_listen=True)``, the default) is one of them.
        pool_timeout: how long a request waits for a free connection when all are in use; then it
            is answered 503 with ``Retry-After`` (clients retry) instead of piling up.
        migrate: apply pending schema migrations when the server runtime starts.

    Example:
        >>> db = database(url="sqlite+aiosqlite:///aiki.db")
        >>> db.dialect
        'sqlite'
    """
    return Database(url, pool_size=pool_size, pool_timeout=pool_timeout.total_seconds(), migrate=migrate)
