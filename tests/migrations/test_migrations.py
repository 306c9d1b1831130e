"""Migrations, on an empty PostgreSQL database and an empty SQLite file.

Upgrading from nothing must give exactly the models (the `alembic check` of this project), survive
a downgrade to base and back, and seed the default namespace that embedded mode works in.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aiki.iam.tables import metadata
from aiki.platform.db import migrate
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID, DEFAULT_ORGANIZATION_ID
from tests import db_support


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}", migrate=False)
        try:
            yield db
        finally:
            await db.dispose()
        return
    name = f"aiki_mig_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(db_support.PG_ADMIN_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {db_support.PG_ADMIN_DSN}: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db = Database(db_support.pg_url(name), migrate=False, pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()
        await db_support.drop_pg_database(name)


def _diff(sync_conn: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def schema_diff(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_diff)


def _table_names(sync_conn: sa.Connection) -> set[str]:
    return set(sa.inspect(sync_conn).get_table_names())


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_table_names)


def _downgrade(sync_conn: sa.Connection, revision: str) -> None:
    config = migrate.alembic_config()
    config.attributes["connection"] = sync_conn
    command.downgrade(config, revision)


async def downgrade(db: Database, revision: str = "base") -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(_downgrade, revision)


async def default_namespace(db: Database) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT id, organization_id, name FROM namespaces WHERE id = :id"),
                {"id": DEFAULT_NAMESPACE_ID},
            )
        ).first()
    return dict(row._mapping) if row else None


async def pg_trigger_exists(db: Database) -> bool:
    async with db.engine.connect() as conn:
        count = await conn.scalar(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'runs_notify'"))
    return bool(count)


async def test_upgrade_from_empty_matches_the_models(empty_db: Database) -> None:
    assert await table_names(empty_db) == set()

    await migrate.upgrade(empty_db)

    assert set(metadata.tables) <= await table_names(empty_db)
    diff = await schema_diff(empty_db)
    assert diff == [], f"the migrations and the models differ: {diff}"


async def test_status_is_up_to_date_only_after_upgrade(empty_db: Database) -> None:
    head = migrate.head_revision()
    assert head is not None

    before = await migrate.status(empty_db)
    assert before == {"current": None, "head": head, "up_to_date": False}

    await migrate.upgrade(empty_db)

    after = await migrate.status(empty_db)
    assert after == {"current": head, "head": head, "up_to_date": True}


async def test_upgrade_is_idempotent(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    await migrate.upgrade(empty_db)
    assert (await migrate.status(empty_db))["up_to_date"]
    assert await schema_diff(empty_db) == []


async def test_default_namespace_exists_after_upgrade(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)

    assert await default_namespace(empty_db) == {
        "id": DEFAULT_NAMESPACE_ID,
        "organization_id": DEFAULT_ORGANIZATION_ID,
        "name": "default",
    }
    async with empty_db.engine.connect() as conn:
        org = await conn.scalar(
            sa.text("SELECT name FROM organizations WHERE id = :id"), {"id": DEFAULT_ORGANIZATION_ID}
        )
    assert org == "default"


async def test_downgrade_to_base_then_upgrade_again(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    if empty_db.dialect == "postgresql":
        assert await pg_trigger_exists(empty_db)

    await downgrade(empty_db, "base")

    assert await table_names(empty_db) <= {"alembic_version"}
    status = await migrate.status(empty_db)
    assert status["current"] is None
    assert not status["up_to_date"]
    if empty_db.dialect == "postgresql":
        assert not await pg_trigger_exists(empty_db)

    await migrate.upgrade(empty_db)

    assert (await migrate.status(empty_db))["up_to_date"]
    assert await schema_diff(empty_db) == []
    assert await default_namespace(empty_db) is not None
    if empty_db.dialect == "postgresql":
        assert await pg_trigger_exists(empty_db)


async def test_every_revision_steps_down_and_up(empty_db: Database) -> None:
    """Each migration's downgrade undoes exactly its upgrade, one step at a time."""
    await migrate.upgrade(empty_db)
    head = migrate.head_revision()
    revisions = []
    current = head
    while current is not None:
        revisions.append(current)
        await downgrade(empty_db, "-1")
        current = await migrate.current_revision(empty_db)
    assert len(revisions) >= 1
    for revision in reversed(revisions):
        await migrate.upgrade(empty_db, revision)
        assert await migrate.current_revision(empty_db) == revision
    assert await schema_diff(empty_db) == []


async def test_the_comparison_notices_drift(empty_db: Database) -> None:
    """Guard against a vacuous check: a schema that drifted from the models shows up in the diff."""
    await migrate.upgrade(empty_db)
    async with empty_db.engine.begin() as conn:
        await conn.execute(sa.text("DROP INDEX ix_runs_parent_run_id"))
        await conn.execute(sa.text("ALTER TABLE workers ADD COLUMN stray INTEGER"))
    diff = await schema_diff(empty_db)
    kinds = {(entry[0], getattr(entry[1], "name", None)) for entry in diff if isinstance(entry, tuple)}
    assert ("add_index", "ix_runs_parent_run_id") in kinds, diff
    # ("remove_column", schema, table, column)
    removed = [(e[2], e[3].name) for e in diff if isinstance(e, tuple) and e[0] == "remove_column"]
    assert removed == [("workers", "stray")], diff


def _alembic_check(sync_conn: sa.Connection) -> None:
    config = migrate.alembic_config()
    config.attributes["connection"] = sync_conn
    command.check(config)  # raises AutogenerateDiffsDetected on any difference


async def test_alembic_check_is_clean_after_upgrade(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    async with empty_db.engine.connect() as conn:
        await conn.run_sync(_alembic_check)


async def test_password_accounts_start_unverified_and_sso_accounts_verified(empty_db: Database) -> None:
    """Migration 0009: password accounts verify at next login; SSO-made or provider-verified ones are verified."""
    db = empty_db
    await migrate.upgrade(db, "0008")
    async with db.engine.begin() as conn:
        for user_id, email, password in (
            ("u-password", "pw@example.com", "argon2-hash"),
            ("u-sso", "sso@example.com", None),
            ("u-linked", "linked@example.com", "argon2-hash"),
            ("u-unverified-link", "maybe@example.com", "argon2-hash"),
        ):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, email, password_hash, name, created_at, updated_at) "
                    "VALUES (:id, :email, :pw, NULL, 1000, 1000)"
                ),
                {"id": user_id, "email": email, "pw": password},
            )
        for identity_id, user_id, email, verified in (
            ("i-1", "u-linked", "Linked@Example.com", True),
            ("i-2", "u-unverified-link", "maybe@example.com", False),
        ):
            await conn.execute(
                sa.text(
                    "INSERT INTO identities (id, user_id, issuer, subject, email, email_verified, created_at) "
                    "VALUES (:id, :user_id, 'https://idp', :id, :email, :verified, 1000)"
                ),
                {"id": identity_id, "user_id": user_id, "email": email, "verified": verified},
            )
    await migrate.upgrade(db)
    async with db.engine.connect() as conn:
        rows = dict((await conn.execute(sa.text("SELECT id, email_verified_at FROM users"))).all())
    assert rows == {"u-password": None, "u-sso": 1000, "u-linked": 1000, "u-unverified-link": None}


async def test_two_databases_upgraded_at_once_in_one_process(tmp_path: Path) -> None:
    """Two embedded servers starting together migrate their own databases (Alembic's context is global)."""
    dbs = [Database(f"sqlite+aiosqlite:///{tmp_path / f'db{i}.db'}", migrate=False) for i in range(2)]
    try:
        await asyncio.gather(*(migrate.upgrade(db) for db in dbs))
        for db in dbs:
            assert (await migrate.status(db))["up_to_date"] is True
    finally:
        for db in dbs:
            await db.dispose()
