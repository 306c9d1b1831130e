"""The database handle: one async engine and the ways a service opens a connection or a transaction.

:class:`Database` is the interface; ``Database(url)`` builds, once, the implementation its URL
names: :class:`~aiki.platform.db.postgres.database.PostgresDatabase` or
:class:`~aiki.platform.db.sqlite.database.SqliteDatabase`. What differs between the two databases
lives in those two packages (``aiki.platform.db.postgres``, ``aiki.platform.db.sqlite``).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aiki.platform.db.hot_pool import DatabaseUnavailable
from aiki.platform.db.raw import RawConn
from aiki.platform.db.wakeups import WakeHub

if TYPE_CHECKING:
    from aiki.platform.db.executor_store import ExecutorStore

DEFAULT_URL = "sqlite+aiosqlite:///aiki.db"
DEFAULT_POOL_SIZE = 20
DEFAULT_POOL_TIMEOUT_S = 10.0

__all__ = ["ConfigurationError", "Database", "DatabaseUnavailable", "database", "normalize_url"]

# URL scheme (as people write it) -> the scheme with the async driver we ship.
_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


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
    driver = _DRIVERS.get(scheme.split("+", 1)[0])
    if driver is None:
        raise ConfigurationError(f"DATABASE_URL scheme {scheme!r} is not supported (use postgresql or sqlite)")
    return f"{driver}://{rest}"


def _implementation(url: str) -> type[Database]:
    """The :class:`Database` class of a normalized URL's database (the only place that asks)."""
    from aiki.platform.db.postgres.database import PostgresDatabase
    from aiki.platform.db.sqlite.database import SqliteDatabase

    by_driver: dict[str, type[Database]] = {
        _DRIVERS["postgresql"]: PostgresDatabase,
        _DRIVERS["sqlite"]: SqliteDatabase,
    }
    return by_driver[url.split("://", 1)[0]]


class WakeListener(Protocol):
    """Carries other processes' wake-ups into this process's hub while started."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Database:
    """An async engine and the ways every service opens a connection or a transaction.

    ``Database(url)`` returns the implementation for the URL's database. Services use only this
    interface: :meth:`transaction` (SQLAlchemy), :meth:`raw_transaction` (driver-level SQL, see
    ``raw.py``), :meth:`autocommit` (driver-level statements each committed on its own: reads, and
    writes that are one statement) and :meth:`atomic` (for a store call written as one statement
    where the database allows it, as a transaction elsewhere).
    """

    dialect: ClassVar[str]
    """The SQLAlchemy dialect name: ``postgresql`` or ``sqlite``."""

    def __new__(cls, url: str = DEFAULT_URL, *args: Any, **kwargs: Any) -> Database:
        impl = _implementation(normalize_url(url)) if cls is Database else cls
        return super().__new__(impl)

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
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, got {pool_size}")
        if not pool_timeout > 0:
            raise ConfigurationError(f"pool_timeout must be a positive number of seconds, got {pool_timeout}")
        self._engine: AsyncEngine | None = None
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._reserved = 0  # connections of the budget held outside the pool (the LISTEN one)
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
        self._resize()

    def unreserve_connection(self) -> None:
        """Give back a connection taken by :meth:`reserve_connection`."""
        self._reserved = max(0, self._reserved - 1)
        self._resize()

    def _resize(self) -> None:
        """Fit the pool to the connections not reserved (only PostgreSQL keeps such a pool)."""

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """One database transaction: committed on success, rolled back on error."""
        raise NotImplementedError

    def raw_transaction(self) -> contextlib.AbstractAsyncContextManager[RawConn]:
        """One transaction on the driver connection, for the hot path (see ``raw.py``)."""
        raise NotImplementedError

    def autocommit(self) -> contextlib.AbstractAsyncContextManager[RawConn]:
        """A driver connection outside any transaction: each statement commits on its own.

        For reads, and for writes that are one statement (atomic by themselves).
        """
        raise NotImplementedError

    def atomic(self) -> contextlib.AbstractAsyncContextManager[RawConn]:
        """A driver connection for one store call that must be atomic.

        Where the store writes the call as one statement (PostgreSQL's CTEs) it autocommits; where
        it takes several statements (SQLite) it is a transaction.
        """
        raise NotImplementedError

    def executor_store(self, namespace_id: str) -> ExecutorStore:
        """The executor's writes for namespace ``namespace_id``, as this database runs them."""
        raise NotImplementedError

    def listener(self, hub: WakeHub) -> WakeListener | None:
        """What carries other processes' wake-ups into ``hub`` (PostgreSQL's LISTEN), or None."""
        raise NotImplementedError

    async def lock_for_migration(self, conn: AsyncConnection) -> None:
        """Within ``conn``'s transaction, keep other processes from migrating at the same time."""
        raise NotImplementedError

    async def identity(self) -> str:
        """A stable name of the database every process that reaches it computes alike."""
        raise NotImplementedError

    async def ping(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


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
