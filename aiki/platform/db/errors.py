"""What a database error means, recognised by SQLSTATE (PostgreSQL) and error code (SQLite).

asyncpg's server errors carry their ``sqlstate``; SQLAlchemy's asyncpg adapter copies it onto its
own wrapper. sqlite3 errors carry ``sqlite_errorcode``. Errors are met bare (the hot path's driver
SQL) or wrapped by SQLAlchemy and ``raise ... from``, so every test walks the chain.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import sqlalchemy.exc as sa_exc
from asyncpg import exceptions as pg
from asyncpg.exceptions import _base as pg_client

UNIQUE_VIOLATION = "23505"
DEADLOCK_DETECTED = "40P01"
# SQLSTATE classes: 23 integrity constraint violation, 22 data exception, 08 connection exception,
# 53 insufficient resources (too many connections, out of memory or disk).
INTEGRITY_CLASS = "23"
DATA_CLASS = "22"
_UNAVAILABLE_CLASSES = ("08", "53")
# 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now (starting up).
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})

# SQLite's extended result codes for a unique or primary key taken.
_SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})

# Client-side conditions no SQLSTATE names: a connection in a bad state ("another operation is in
# progress": a pooled connection whose session the server ended), no socket, no free connection.
_UNAVAILABLE_CLASSES_PY: tuple[type[BaseException], ...] = (
    pg.InterfaceError,
    pg.InternalClientError,
    OSError,  # ConnectionError and its kin, TimeoutError
    sqlite3.OperationalError,
    sa_exc.OperationalError,
    sa_exc.TimeoutError,
)
# A value the driver could not even send (beyond its type's range) is the caller's input too.
_OUT_OF_RANGE_PY: tuple[type[BaseException], ...] = (
    OverflowError,
    sqlite3.DataError,
    sa_exc.DataError,
    pg_client.DataError,  # asyncpg refused the argument before sending it
)
_PG_SERVER_ERROR: type[BaseException] = pg.PostgresError
_MAX_DEPTH = 20


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (``__cause__``, ``__context__``, SQLAlchemy's ``orig``), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < _MAX_DEPTH:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        todo += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE ``exc`` carries itself (asyncpg, or SQLAlchemy's adapter), if any."""
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) and len(state) == 5 else None


def _states(exc: BaseException) -> Iterator[str]:
    for e in chain(exc):
        state = sqlstate(e)
        if state is not None:
            yield state


def is_unique_violation(exc: BaseException) -> bool:
    """True for a unique-constraint violation from either driver."""
    for e in chain(exc):
        if sqlstate(e) == UNIQUE_VIOLATION:
            return True
        if isinstance(e, sqlite3.IntegrityError) and getattr(e, "sqlite_errorcode", None) in _SQLITE_UNIQUE:
            return True
    return False


def is_deadlock(exc: BaseException) -> bool:
    """True when PostgreSQL aborted the transaction to break a deadlock (safe to run it again)."""
    return DEADLOCK_DETECTED in _states(exc)


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database could not be reached or used.

    A refused or dropped connection, a server shutting down or starting up, too many clients, no
    pool connection free in time: the request did not get its work done and may simply be sent
    again.
    """
    for e in chain(exc):
        state = sqlstate(e)
        if state is not None and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES):
            return True
        if isinstance(e, _UNAVAILABLE_CLASSES_PY):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
    return False


def integrity_error(exc: BaseException) -> BaseException | None:
    """The integrity error (SQLSTATE class 23, sqlite3's) ``exc`` is or wraps: the driver's own when
    found (the most precise), else a wrapper (SQLAlchemy's, or its adapter's)."""
    found: BaseException | None = None
    for e in chain(exc):
        state = sqlstate(e)
        if isinstance(e, sqlite3.IntegrityError):
            return e
        if state is not None and state.startswith(INTEGRITY_CLASS):
            if isinstance(e, _PG_SERVER_ERROR):
                return e
            found = found or e
        elif isinstance(e, sa_exc.IntegrityError):
            found = found or e
    return found


def is_data_error(exc: BaseException) -> bool:
    """True when a value does not fit its column (SQLSTATE class 22, or the driver refused it)."""
    for e in chain(exc):
        state = sqlstate(e)
        if state is not None and state.startswith(DATA_CLASS):
            return True
        if isinstance(e, _OUT_OF_RANGE_PY):
            return True
    return False
