"""Integrity violations (a unique key taken, a foreign key gone, a NOT NULL or CHECK broken) from
either driver, recognised by SQLSTATE class 23 (SQLite: its integrity error), and described without
the values that violated them.

A request that races another (two accepts of one invitation, two sign-ups of one email) may meet
one the code did not expect: it is a conflict with the current state, never a server error. What
is logged is the constraint, not the row: SQLAlchemy's message carries the SQL parameters (hidden
by the engine's ``hide_parameters``) and PostgreSQL's DETAIL repeats the key's values.
"""

from __future__ import annotations

import sqlite3

from aiki.platform.db.errors import integrity_error


def integrity_violation(exc: BaseException) -> BaseException | None:
    """The integrity error (SQLSTATE class 23, sqlite3's) ``exc`` is or wraps, if any: the driver's
    own when found (the most precise), else SQLAlchemy's wrapper."""
    return integrity_error(exc)


def describe(violation: BaseException) -> str:
    """Which constraint a violation broke, without any value: safe to log."""
    constraint = getattr(violation, "constraint_name", None)  # asyncpg
    if constraint:
        table = getattr(violation, "table_name", None)
        where = f" on table {table}" if table else ""
        return f"{type(violation).__name__}: constraint {constraint}{where}"
    if isinstance(violation, sqlite3.IntegrityError):
        # "UNIQUE constraint failed: users.email": SQLite names columns, never values.
        return f"IntegrityError: {(str(violation).splitlines() or [''])[0][:200]}"
    return type(violation).__name__


CONFLICT_DETAIL = "the request conflicts with a concurrent change or an existing record; reload and try again"
