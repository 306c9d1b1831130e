"""Driver-level SQL for the hot path, written once for PostgreSQL and SQLite.

SQLAlchemy builds, caches and compiles statements at a cost of about a millisecond of CPU per
statement; the orchestration hot path (start, claim, record a task, transition) runs a handful of
fixed statements per step, so it talks to the driver connection directly: asyncpg on PostgreSQL
(prepared statements, binary protocol) and sqlite3 (through aiosqlite) on SQLite. Statements use
PostgreSQL's ``$n`` placeholders; on SQLite they become ``?n``, which SQLite reads the same way.
SQLAlchemy keeps the schema (``tables.py``), migrations and the cold queries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]


@functools.lru_cache(maxsize=1024)
def _to_sqlite(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class Params:
    """Collects bind values and hands out their placeholders, so dynamic SQL stays parameterized."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class RawConn:
    """One driver connection (inside a transaction when the caller opened one)."""

    def __init__(self, driver: Any, dialect: str) -> None:
        self.driver = driver
        self.dialect = dialect
        self.is_postgres = dialect == "postgresql"

    def any_of(self, params: Params, column: str, values: Sequence[Any]) -> str:
        """``column`` equals one of ``values``, as a parameterized SQL condition."""
        if not values:
            return "FALSE" if self.is_postgres else "0"
        if self.is_postgres:
            return f"{column} = ANY({params(list(values))})"
        return f"{column} IN ({', '.join(params(v) for v in values)})"

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if self.is_postgres:
            return list(await self.driver.fetch(sql, *args))
        cursor = await self.driver.execute(_to_sqlite(sql), args)
        try:
            rows = await cursor.fetchall()
            if not rows:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in rows]
        finally:
            await cursor.close()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        if self.is_postgres:
            status: str = await self.driver.execute(sql, *args)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        cursor = await self.driver.execute(_to_sqlite(sql), args)
        try:
            return int(cursor.rowcount)
        finally:
            await cursor.close()

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if not batch:
            return
        if self.is_postgres:
            await self.driver.executemany(sql, batch)
        else:
            await self.driver.executemany(_to_sqlite(sql), batch)


def is_unique_violation(exc: BaseException) -> bool:
    """True for a unique-constraint violation from either driver."""
    # SQLAlchemy wraps asyncpg's UniqueViolationError (as __cause__); raw connections raise it bare.
    for e in (exc, exc.__cause__, getattr(exc, "orig", None)):
        if e is None:
            continue
        name = type(e).__name__
        if name == "UniqueViolationError" or (name == "IntegrityError" and "UNIQUE" in str(e)):
            return True
    return "UniqueViolationError" in str(exc)


def is_deadlock(exc: BaseException) -> bool:
    """True when PostgreSQL aborted the transaction to break a deadlock (safe to run it again)."""
    return type(exc).__name__ == "DeadlockDetectedError"


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database could not be reached or used.

    A refused or dropped connection, a server shutting down or starting up, too many clients, no
    pool connection free in time: the request did not get its work done and may simply be sent
    again. Matched by exception class, through SQLAlchemy's and the drivers' wrapping.
    """
    import sqlite3

    import sqlalchemy.exc as sa_exc

    try:
        import asyncpg.exceptions as pg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pg_classes: tuple[type[BaseException], ...] = ()
    else:
        pg_classes = (
            pg.PostgresConnectionError,  # class 08: connection exceptions, ConnectionDoesNotExistError
            pg.InterfaceError,  # the client side of a connection in a bad state
            # "another operation is in progress": a pooled connection whose session the server just
            # ended (the shutdown message was read, the socket's close not yet) was handed out.
            pg.InternalClientError,
            pg.AdminShutdownError,
            pg.CrashShutdownError,
            pg.CannotConnectNowError,
            pg.InsufficientResourcesError,  # class 53: too many connections, out of memory or disk
            # A connection the server shut down while it sat idle in the pool: asyncpg reads the
            # FATAL error in a state that expects none, and the next query on it fails with
            # "cannot switch to state …; another operation (2) is in progress" before the closed
            # socket is noticed. The caller drops the connection (engine._drop_if_broken).
            pg.InternalClientError,
        )
    unavailable = (*pg_classes, OSError, sqlite3.OperationalError, sa_exc.OperationalError, sa_exc.TimeoutError)
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        if isinstance(e, unavailable):  # OSError: ConnectionError and its kin, TimeoutError
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False
