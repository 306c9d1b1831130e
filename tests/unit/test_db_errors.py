"""Database errors are recognised by SQLSTATE (PostgreSQL) and error code (SQLite), bare or wrapped
by SQLAlchemy and ``raise ... from``, never by a class name or a message."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
import sqlalchemy.exc as sa_exc

from aiki.platform.db.errors import (
    integrity_error,
    is_connection_failure,
    is_data_error,
    is_deadlock,
    is_unique_violation,
)


def _sqlite_error(*statements: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    try:
        for sql in statements:
            conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


def _wrapped(orig: BaseException) -> BaseException:
    """As SQLAlchemy raises it: its wrapper, the driver's error as ``orig`` and as the cause."""
    wrapper = sa_exc.IntegrityError("INSERT ...", {}, orig)
    wrapper.__cause__ = orig
    return wrapper


class _AdapterError(Exception):
    """SQLAlchemy's asyncpg adapter error: copies the SQLSTATE, wraps the asyncpg error."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("adapter")
        self.sqlstate = sqlstate


UNIQUE_SQLITE = ("CREATE TABLE t (k INTEGER UNIQUE)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)")
PK_SQLITE = ("CREATE TABLE t (k INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)")
NOT_NULL_SQLITE = ("CREATE TABLE t (k INTEGER NOT NULL)", "INSERT INTO t VALUES (NULL)")


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        _wrapped(asyncpg.UniqueViolationError("duplicate key")),
        _AdapterError("23505"),
        _sqlite_error(*UNIQUE_SQLITE),
        _sqlite_error(*PK_SQLITE),
        _wrapped(_sqlite_error(*UNIQUE_SQLITE)),
    ],
)
def test_a_unique_violation_is_recognised_from_either_driver(exc: BaseException) -> None:
    assert is_unique_violation(exc)
    assert integrity_error(exc) is not None


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.NotNullViolationError("null"),
        asyncpg.ForeignKeyViolationError("fk"),
        _sqlite_error(*NOT_NULL_SQLITE),
        ValueError("UNIQUE constraint failed: UniqueViolationError"),  # a message proves nothing
        asyncpg.DeadlockDetectedError("deadlock"),
    ],
)
def test_other_errors_are_no_unique_violation(exc: BaseException) -> None:
    assert not is_unique_violation(exc)


def test_integrity_error_prefers_the_drivers_own_error() -> None:
    orig = asyncpg.ForeignKeyViolationError("fk")
    assert integrity_error(_wrapped(orig)) is orig
    sqlite_orig = _sqlite_error(*NOT_NULL_SQLITE)
    assert integrity_error(_wrapped(sqlite_orig)) is sqlite_orig
    assert integrity_error(asyncpg.DeadlockDetectedError("deadlock")) is None
    assert integrity_error(ValueError("UNIQUE constraint failed")) is None


def test_a_deadlock_is_recognised_by_its_sqlstate() -> None:
    assert is_deadlock(asyncpg.DeadlockDetectedError("deadlock"))
    assert is_deadlock(_AdapterError("40P01"))
    assert not is_deadlock(asyncpg.SerializationError("serialization"))
    assert not is_deadlock(RuntimeError("DeadlockDetectedError"))


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.AdminShutdownError("57P01"),
        asyncpg.CannotConnectNowError("57P03"),
        asyncpg.TooManyConnectionsError("53300"),
        asyncpg.ConnectionDoesNotExistError("08003"),
        asyncpg.InternalClientError("another operation is in progress"),
        ConnectionRefusedError(),
        sqlite3.OperationalError("database is locked"),
        _AdapterError("08006"),
    ],
)
def test_a_connection_failure_is_recognised(exc: BaseException) -> None:
    assert is_connection_failure(exc)


def test_an_ordinary_error_is_no_connection_failure() -> None:
    assert not is_connection_failure(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_connection_failure(ValueError("connection refused"))


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.NumericValueOutOfRangeError("out of range"),
        asyncpg.StringDataRightTruncationError("too long"),
        asyncpg.CharacterNotInRepertoireError("NUL"),
        _AdapterError("22003"),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
    ],
)
def test_a_value_that_does_not_fit_is_a_data_error(exc: BaseException) -> None:
    assert is_data_error(exc)


def test_other_errors_are_no_data_error() -> None:
    assert not is_data_error(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_data_error(ValueError("DataError"))
