"""PostgreSQL's schedule statements: other server processes hear of a moved deadline by NOTIFY."""

from __future__ import annotations

from aiki.platform.db.schedules_repo import ScheduleRepository


class PgScheduleRepository(ScheduleRepository):
    """Schedules of one namespace, on PostgreSQL."""

    async def announce(self) -> None:
        await self.conn.execute("SELECT pg_notify('aiki_wake', 'schedule')")
