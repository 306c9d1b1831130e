"""Integrity violations (a unique key taken, a foreign key gone, a NOT NULL or CHECK broken) from
either driver, recognised by class, and described without the values that violated them.

A request that races another (two accepts of one invitation, two sign-ups of one email) may meet
one the code did not expect: it is a conflict with the current state, never a server error. What
is logged is the constraint, not the row: SQLAlchemy's message carries the SQL parameters (hidden
by the engine's ``hide_parameters``) and PostgreSQL's DETAIL repeats the key's values.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy.exc as sa_exc
from asyncpg.exceptions import IntegrityConstraintViolationError

# SQLAlchemy's wrapper, and each driver's own (the hot path's raw SQL raises those bare).
_CLASSES: tuple[type[BaseException], ...] = (
    sa_exc.IntegrityError,
    sqlite3.IntegrityError,
    IntegrityConstraintViolationError,
)
_MAX_DEPTH = 10


def integrity_violation(exc: BaseException) -> BaseException | None:
    """The driver's integrity error ``exc`` is or wraps (through SQLAlchemy and ``raise from``), if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    found: BaseException | None = None
    while todo and len(seen) < _MAX_DEPTH:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, _CLASSES):
            if not isinstance(e, sa_exc.IntegrityError):
                return e  # the driver's own error: the most precise
            found = e
        orig = getattr(e, "orig", None)
        todo += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]
    return found


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
