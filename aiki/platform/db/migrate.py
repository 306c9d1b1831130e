"""Alembic, driven from code: `aiki migrate`, and the server's migrate-on-start, call these."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.platform.db.engine import Database


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parents[2] / "migrations"))
    return config


def _upgrade(sync_conn: sa.Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = sync_conn
    command.upgrade(config, revision)


def _current(sync_conn: sa.Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


# Alembic keeps the running migration's context in module globals (``alembic.op``, ``alembic.context``):
# two upgrades interleaved on one event loop (two embedded servers starting together) would run each
# other's operations on the wrong database. One upgrade at a time per loop.
_upgrade_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; safe when several processes, or several servers in one
    process, start at once."""
    config = alembic_config()
    lock = _upgrade_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, db.engine.begin() as conn:
        await db.lock_for_migration(conn)
        await conn.run_sync(_upgrade, config, revision)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def status(db: Database) -> dict[str, Any]:
    """The applied and latest revisions, and whether the schema is at head."""
    current = await current_revision(db)
    head = head_revision()
    return {"current": current, "head": head, "up_to_date": current == head}


async def run_in_connection(conn: AsyncConnection, fn: Any, *args: Any) -> Any:
    return await conn.run_sync(fn, *args)
