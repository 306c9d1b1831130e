"""Creates and drops the benchmark's own databases. Each scenario run gets a freshly created one."""

import asyncio
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.scenarios import Backend

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Each system's SQLAlchemy driver for each backend: Aiki is async (asyncpg/aiosqlite), DBOS uses psycopg.
DRIVERS: dict[str, dict[Backend, str]] = {
    "aiki": {"postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"},
    "dbos": {"postgres": "postgresql", "sqlite": "sqlite"},
    "aiki-push": {"postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"},
}


# Two `python -m bench` on one PostgreSQL (two developers, CI) must not drop each other's databases.
RUN_TAG = os.environ.get("BENCH_DB_TAG") or str(os.getpid())


def database_name(system: str) -> str:
    return f"{system.replace('-', '_')}_bench_{RUN_TAG}"


def postgres_url(admin_url: str, system: str) -> str:
    """The admin URL pointed at the system's bench database, with the system's driver."""
    parts = urlsplit(admin_url)
    return urlunsplit((DRIVERS[system]["postgres"], parts.netloc, f"/{database_name(system)}", parts.query, ""))


def sqlite_url(directory: Path, system: str) -> str:
    return f"{DRIVERS[system]['sqlite']}:///{directory / (database_name(system) + '.sqlite')}"


def _asyncpg_url(admin_url: str) -> str:
    # asyncpg wants a plain postgresql:// URL, without any SQLAlchemy "+driver" suffix.
    parts = urlsplit(admin_url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


async def _execute(admin_url: str, *statements: str) -> str:
    conn = await asyncpg.connect(_asyncpg_url(admin_url))
    try:
        for statement in statements:
            await conn.execute(statement)
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


def recreate_postgres(admin_url: str, system: str) -> str:
    """Drop and create the system's database; returns the server version."""
    name = database_name(system)
    # FORCE ends connections a crashed earlier run may have left behind.
    return asyncio.run(
        _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    )


def drop_postgres(admin_url: str, systems: list[str]) -> None:
    statements = [f'DROP DATABASE IF EXISTS "{database_name(s)}" WITH (FORCE)' for s in systems]
    asyncio.run(_execute(admin_url, *statements))


def reset_sqlite(directory: Path, system: str) -> None:
    base = directory / (database_name(system) + ".sqlite")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{base}{suffix}").unlink(missing_ok=True)
