"""The executor's writes on SQLite: short transactions (one writer at a time); no one-statement
shortcuts, so those methods send every write to the general path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.executor_store import Claimed, Recorded, SharedExecutorStore, claimed_state
from aiki.platform.db.raw import Row
from aiki.platform.db.runs_repo import HELD, RunRepository
from aiki.platform.db.steps_repo import StepRepository


class SqliteExecutorStore(SharedExecutorStore):
    """The executor's writes on SQLite (see the module docstring)."""

    async def record_task(
        self, run_id: str, revision: int, task: Mapping[str, Any], lease_until: int, extend_below: int
    ) -> Recorded:
        async with self.db.raw_transaction() as conn:
            # Fencing and a free lease extension in one statement; a run paused while the task ran
            # is still held: its result is recorded (pause never makes a side effect run twice).
            status: str | None = await conn.fetchval(
                "UPDATE runs SET updated_at = $4, wake_at = $5 "
                f"WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND {HELD} RETURNING status",
                run_id,
                self.namespace_id,
                revision,
                task["created_at"],
                lease_until,
            )
            if status is None:
                return Recorded(held=False, recorded=False, paused=False)
            recorded = await StepRepository(conn, self.namespace_id).upsert_task(run_id, task)
        return Recorded(held=True, recorded=recorded, paused=status == "paused")

    async def finish(
        self,
        run_id: str,
        revision: int,
        values: Mapping[str, Any],
        reason: str | None,
        now: int,
        task: Mapping[str, Any] | None = None,
    ) -> Row | None:
        return None

    async def sleep(
        self, run_id: str, revision: int, sleep: Mapping[str, Any], grace_ms: int | None, reason: str, now: int
    ) -> int | None:
        return None

    async def resume_held_sleep(self, run_id: str, revision: int, lease_until: int, reason: str, now: int) -> bool:
        return False

    async def claim(
        self,
        versions: Sequence[tuple[str, str]],
        pools: Sequence[str],
        limit: int,
        worker_id: str,
        now: int,
        lease_until: int,
    ) -> Claimed:
        async with self.db.raw_transaction() as conn:
            claimed, skipped = await RunRepository(conn, self.namespace_id).claim(
                versions, pools, limit, worker_id, now, lease_until
            )
            state = await claimed_state(StepRepository(conn, self.namespace_id), claimed)
        return Claimed(claimed, skipped, state)
