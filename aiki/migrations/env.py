"""Alembic environment: runs on the connection ``aiki.platform.db.migrate`` hands over.

Run from the command line (``alembic -c ...``) it builds its own engine from ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from aiki.iam.tables import metadata  # the core's MetaData, with IAM's tables registered on it
from aiki.platform.db.engine import Database

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    db = Database(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///aiki.db"))
    async with db.engine.begin() as conn:
        await conn.run_sync(_run)
    await db.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
