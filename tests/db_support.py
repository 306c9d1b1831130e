"""Test databases: real PostgreSQL and SQLite, each test on an empty, migrated schema.

PostgreSQL: one database per test process (xdist worker), migrated once, truncated between tests.
SQLite: a migrated template file, copied for each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import asyncpg

from aiki.platform.db import migrate
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_ORGANIZATION_ID

PG_ADMIN_DSN = os.environ.get("AIKI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tables holding per-test data; organizations and namespaces keep their migration seed.
DATA_TABLES = (
    "endpoint_deliveries",
    "endpoints",
    "schedules",
    "wait_timeouts",
    "sleeps",
    "events",
    "tasks",
    "run_history",
    "runs",
    "workers",
    "workflow_versions",
    "workflows",
    # IAM
    "audit_log",
    "rate_limits",
    "oidc_logins",
    "api_keys",
    "sessions",
    "invitations",
    "namespace_members",
    "organization_members",
    "identities",
    "users",
)


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


async def create_pg_database(prefix: str = "aiki_test") -> str:
    """Create a fresh, migrated database; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect 15 main start` or set AIKI_TEST_PG."
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    db = Database(pg_url(name), migrate=False, pool_size=2)
    await migrate.upgrade(db)
    await db.dispose()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def truncate_pg(name: str) -> None:
    conn = await asyncpg.connect(pg_url(name))
    try:
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
        # Organizations made by sign-ups go too (their namespaces cascade); the migration's seed stays.
        await conn.execute("DELETE FROM organizations WHERE id <> $1", DEFAULT_ORGANIZATION_ID)
    finally:
        await conn.close()


async def create_sqlite_template(path: Path) -> Path:
    db = Database(f"sqlite+aiosqlite:///{path}", migrate=False)
    await migrate.upgrade(db)
    await db.dispose()
    return path


def copy_sqlite(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]
