"""The sqlite3 connection (through aiosqlite) behind the hot path (see ``raw.py``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from aiki.platform.db.due_runs_repo import DueRunRepository
from aiki.platform.db.raw import Params, RawConn, Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.schedules_repo import ScheduleRepository
from aiki.platform.db.sqlite.runs import SqliteDueRunRepository, SqliteRunRepository
from aiki.platform.db.sqlite.schedules import SqliteScheduleRepository


@functools.lru_cache(maxsize=1024)
def _to_sqlite(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class SqliteConn(RawConn):
    """A sqlite3 connection: ``?n`` placeholders, ``IN`` lists, no row locks (one writer at a time)."""

    dialect: ClassVar[str] = "sqlite"
    for_update: ClassVar[str] = ""
    skip_locked: ClassVar[str] = ""
    repositories: ClassVar[Mapping[type, type]] = {
        RunRepository: SqliteRunRepository,
        DueRunRepository: SqliteDueRunRepository,
        ScheduleRepository: SqliteScheduleRepository,
    }

    def any_of(self, params: Params, column: str, values: Sequence[Any]) -> str:
        if not values:
            return "0"
        return f"{column} IN ({', '.join(params(v) for v in values)})"

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cursor = await self.driver.execute(_to_sqlite(sql), args)
        try:
            rows = await cursor.fetchall()
            if not rows:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in rows]
        finally:
            await cursor.close()

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self.driver.execute(_to_sqlite(sql), args)
        try:
            return int(cursor.rowcount)
        finally:
            await cursor.close()

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            await self.driver.executemany(_to_sqlite(sql), batch)
