"""The asyncpg connection behind the hot path (see ``raw.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from aiki.platform.db.due_runs_repo import DueRunRepository
from aiki.platform.db.postgres.runs import PgDueRunRepository, PgRunRepository
from aiki.platform.db.postgres.schedules import PgScheduleRepository
from aiki.platform.db.raw import Params, RawConn, Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.schedules_repo import ScheduleRepository


class PgConn(RawConn):
    """An asyncpg connection: prepared statements, arrays as parameters, row locks."""

    dialect: ClassVar[str] = "postgresql"
    for_update: ClassVar[str] = " FOR UPDATE"
    skip_locked: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    repositories: ClassVar[Mapping[type, type]] = {
        RunRepository: PgRunRepository,
        DueRunRepository: PgDueRunRepository,
        ScheduleRepository: PgScheduleRepository,
    }

    def any_of(self, params: Params, column: str, values: Sequence[Any]) -> str:
        if not values:
            return "FALSE"
        return f"{column} = ANY({params(list(values))})"

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self.driver.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.driver.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            await self.driver.executemany(sql, batch)
