"""Migration 0010 on both databases: worker ids become unique per namespace, existing workers kept."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aiki.platform.db import migrate
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from tests.migrations.test_migrations import downgrade, empty_db, schema_diff

__all__ = ["empty_db"]  # the fixture, shared with the other migration tests

OTHER_NAMESPACE = "00000000-0000-7000-8000-0000000000aa"
BEFORE = "0009"
AFTER = "0010"


def _worker(namespace_id: str, worker_id: str, host: str, heartbeat: int) -> dict[str, Any]:
    return {
        "id": worker_id,
        "namespace_id": namespace_id,
        "host": host,
        "pid": 7,
        "versions": "[]",
        "pools": "[null]",
        "concurrency": 3,
        "started_at": 1,
        "last_heartbeat_at": heartbeat,
    }


_INSERT = sa.text(
    "INSERT INTO workers (id, namespace_id, host, pid, versions, pools, concurrency, started_at, last_heartbeat_at) "
    "VALUES (:id, :namespace_id, :host, :pid, :versions, :pools, :concurrency, :started_at, :last_heartbeat_at)"
)


async def _insert(db: Database, *rows: dict[str, Any]) -> None:
    async with db.engine.begin() as conn:
        for row in rows:
            await conn.execute(_INSERT, row)


async def _rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as conn:
        result = await conn.execute(
            sa.text("SELECT namespace_id, id, host, pid, concurrency, last_heartbeat_at FROM workers ORDER BY 1, 2")
        )
        return [tuple(r) for r in result]


def _primary_key(sync_conn: sa.Connection) -> list[str]:
    columns: list[str] = sa.inspect(sync_conn).get_pk_constraint("workers")["constrained_columns"]
    return columns


async def primary_key(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_primary_key)


async def test_worker_ids_become_per_namespace_and_existing_workers_stay(empty_db: Database) -> None:
    db = empty_db
    await migrate.upgrade(db, BEFORE)
    assert await primary_key(db) == ["id"]
    await _insert(db, _worker(DEFAULT_NAMESPACE_ID, "w-1", "host-a", 100), _worker(OTHER_NAMESPACE, "w-2", "b", 200))
    before = await _rows(db)

    await migrate.upgrade(db, AFTER)

    assert sorted(await primary_key(db)) == ["id", "namespace_id"]
    assert await _rows(db) == before
    # The same id in another namespace is another worker now.
    await _insert(db, _worker(OTHER_NAMESPACE, "w-1", "host-b", 300))
    assert len(await _rows(db)) == 3
    await migrate.upgrade(db)
    assert await schema_diff(db) == []


async def test_the_downgrade_keeps_the_worker_heard_from_last_per_id(empty_db: Database) -> None:
    db = empty_db
    await migrate.upgrade(db, AFTER)
    await _insert(
        db,
        _worker(DEFAULT_NAMESPACE_ID, "w-1", "stale", 100),
        _worker(OTHER_NAMESPACE, "w-1", "recent", 300),
        _worker(DEFAULT_NAMESPACE_ID, "w-2", "alone", 200),
    )

    await downgrade(db, BEFORE)

    assert await primary_key(db) == ["id"]
    assert [(r[1], r[2]) for r in await _rows(db)] == [("w-2", "alone"), ("w-1", "recent")]
