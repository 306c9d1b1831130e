"""SQLite's run statements: several statements where PostgreSQL takes one (the caller's transaction
holds them together), no row locks (one writer at a time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiki.platform.db.due_runs_repo import STALL_PICK, STALL_SET, DueRunRepository
from aiki.platform.db.raw import Params, Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.statuses import QUEUED
from aiki.platform.domain import run_states as rs


class SqliteRunRepository(RunRepository):
    """Runs of one namespace, on SQLite."""

    async def insert_started(self, values: Mapping[str, Any]) -> None:
        await self.insert(values)
        await self.add_history(
            [
                {
                    "run_id": values["id"],
                    "attempt": values["attempt"],
                    "from_status": None,
                    "to_status": values["status"],
                    "created_at": values["created_at"],
                }
            ]
        )

    async def insert_claimed(self, values: Mapping[str, Any], reason: str) -> None:
        await self.insert(values)
        base = {"run_id": values["id"], "attempt": values["attempt"], "created_at": values["created_at"]}
        await self.add_history(
            [
                {**base, "from_status": None, "to_status": rs.QUEUED},
                {**base, "from_status": rs.QUEUED, "to_status": rs.RUNNING, "reason": reason},
            ]
        )

    async def _extend_leases(self, held_by_me: str, p: Params) -> None:
        await self.conn.execute(f"UPDATE runs SET wake_at = $3, updated_at = $2 WHERE {held_by_me}", *p.values)


class SqliteDueRunRepository(DueRunRepository):
    """The timer loop's view, on SQLite (one writer: nothing to skip)."""

    async def end_due_sleeps(self, now: int, limit: int, target: str) -> list[Row]:
        return []  # no one-statement form: the timer loop's general pass ends them

    def _lease_expiry(self, args: list[Any], lease_ttl_ms: int) -> str:
        return "$1 >= $3"

    def _lease_hold(self, args: list[Any], lease_ttl_ms: int) -> str:
        return "max(min(wake_at), $1)"

    async def stall(self, queued_before: int, now: int, limit: int) -> list[Row]:
        return await self.conn.fetch(
            f"UPDATE runs {STALL_SET} WHERE id IN ({STALL_PICK}) AND status = {QUEUED} "
            "RETURNING id, namespace_id, attempt",
            queued_before,
            now,
            limit,
        )
