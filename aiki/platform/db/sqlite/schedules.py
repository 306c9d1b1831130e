"""SQLite's schedule statements."""

from __future__ import annotations

from aiki.platform.db.schedules_repo import ScheduleRepository


class SqliteScheduleRepository(ScheduleRepository):
    """Schedules of one namespace, on SQLite."""

    async def announce(self) -> None:
        return None  # one process: its schedule loop hears the local hub already
