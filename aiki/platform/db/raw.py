"""Driver-level SQL for the hot path: the connection interface and the repositories' base.

SQLAlchemy builds, caches and compiles statements at a cost of about a millisecond of CPU per
statement; the orchestration hot path (start, claim, record a task, transition) runs a handful of
fixed statements per step, so it talks to the driver connection directly: asyncpg on PostgreSQL
(prepared statements, binary protocol) and sqlite3 (through aiosqlite) on SQLite. Statements use
PostgreSQL's ``$n`` placeholders; on SQLite they become ``?n``, which SQLite reads the same way.
SQLAlchemy keeps the schema (``tables.py``), migrations and the cold queries.

:class:`RawConn` is implemented once per database (``postgres/conn.py``, ``sqlite/conn.py``): the
driver calls, and the few spellings that differ (row locks, ``= ANY`` or ``IN``). A repository
(:class:`Repository`) built on a connection is that database's subclass of it, so a statement that
only one database can run (a one-statement CTE) is that subclass's business.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from aiki.platform.db.errors import is_connection_failure, is_deadlock, is_unique_violation

Row = Mapping[str, Any]

__all__ = [
    "Params",
    "RawConn",
    "Repository",
    "Row",
    "is_connection_failure",
    "is_deadlock",
    "is_unique_violation",
]


class Params:
    """Collects bind values and hands out their placeholders, so dynamic SQL stays parameterized."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class RawConn(abc.ABC):
    """One driver connection (inside a transaction when the caller opened one)."""

    dialect: ClassVar[str]
    for_update: ClassVar[str]
    """Suffix that locks the rows a SELECT reads until the transaction ends (empty where the
    transaction holds the whole database)."""
    skip_locked: ClassVar[str]
    """Suffix that locks the rows read and passes over those another transaction holds."""
    repositories: ClassVar[Mapping[type, type]] = {}
    """Each repository base class -> this database's subclass of it (see :class:`Repository`)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    @abc.abstractmethod
    def any_of(self, params: Params, column: str, values: Sequence[Any]) -> str:
        """``column`` equals one of ``values``, as a parameterized SQL condition."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Repository:
    """Base of the driver-level repositories: built on a connection, one is that database's subclass.

    ``RunRepository(conn, ns)`` returns the ``RunRepository`` subclass ``conn``'s database
    registered (``RawConn.repositories``), so callers name only the interface.
    """

    def __new__(cls, conn: RawConn, *args: Any, **kwargs: Any) -> Any:
        return super().__new__(conn.repositories.get(cls, cls))


@functools.lru_cache(maxsize=256)
def tenant_insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """``INSERT`` of one row of a tenant table: ``$1`` the namespace, then ``columns`` in order."""
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    return f"INSERT INTO {table} (namespace_id, {', '.join(columns)}) VALUES ($1, {placeholders})"


@functools.lru_cache(maxsize=256)
def tenant_update_sql(table: str, columns: tuple[str, ...]) -> str:
    """``UPDATE`` of one row of a tenant table by ``$1`` id and ``$2`` namespace, setting ``columns`` from ``$3``."""
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return f"UPDATE {table} SET {sets} WHERE id = $1 AND namespace_id = $2"
