"""SQL for runs: insert, read, update, claim, and the transitions of a run its executor holds.

Driver-level SQL (see ``raw.py``): these statements run on every step of every run. The queries are
split by concern (``leases_repo.py``, ``children_repo.py``; the timer loop's in ``due_runs_repo.py``);
what only one database can run is in its subclass (``postgres/runs.py``, ``sqlite/runs.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from aiki.platform.db.children_repo import ChildQueries
from aiki.platform.db.leases_repo import LeaseQueries
from aiki.platform.db.raw import Row
from aiki.platform.db.run_rows import CHILD_COLUMNS, RUN_COLUMNS
from aiki.platform.db.statuses import HELD, QUEUED, RUNNING
from aiki.platform.domain import run_states as rs

__all__ = ["CHILD_COLUMNS", "HELD", "RUN_COLUMNS", "RunRepository", "insert_sql"]


@functools.lru_cache(maxsize=256)
def insert_sql(columns: tuple[str, ...]) -> str:
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    return f"INSERT INTO runs (namespace_id, {', '.join(columns)}) VALUES ($1, {placeholders})"


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return f"UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2"


class RunRepository(LeaseQueries, ChildQueries):
    """Runs of one namespace. ``RunRepository(conn, ns)`` is the subclass of ``conn``'s database."""

    async def insert(self, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(insert_sql(columns), self.namespace_id, *values.values())

    async def insert_started(self, values: Mapping[str, Any]) -> None:
        """Insert a new run and its first history row (``None`` → its status, at ``created_at``)."""
        raise NotImplementedError

    async def insert_claimed(self, values: Mapping[str, Any], reason: str) -> None:
        """Insert a new run already claimed (``values`` say by whom) and the history of both
        steps: ``None`` → ``queued``, then ``queued`` → ``running`` for ``reason``."""
        raise NotImplementedError

    async def requeue_unstarted(self, run_id: str, worker_id: str, reason: str, now: int, *, revision: int = 1) -> bool:
        """A run claimed by ``worker_id`` at ``revision`` that never reached it goes back to the
        queue, as if never claimed: no recovery is used, and a first claim's start time and
        execution deadline are undone (the revision still moves on, fencing any write from that
        claim). False when the run moved on meanwhile."""
        row = await self.conn.fetchrow(
            f"UPDATE runs SET status = {QUEUED}, revision = revision + 1, lease_owner = NULL, wake_at = NULL, "
            "queued_at = $4, updated_at = $4, "
            "started_at = CASE WHEN revision = 1 THEN NULL ELSE started_at END, "
            "deadline_at = CASE WHEN revision = 1 THEN NULL ELSE deadline_at END "
            f"WHERE id = $1 AND namespace_id = $2 AND status = {RUNNING} AND revision = $5 AND lease_owner = $3 "
            "RETURNING attempt",
            run_id,
            self.namespace_id,
            worker_id,
            now,
            revision,
        )
        if row is None:
            return False
        await self.add_history(
            [
                {
                    "run_id": run_id,
                    "attempt": row["attempt"],
                    "from_status": rs.RUNNING,
                    "to_status": rs.QUEUED,
                    "reason": reason,
                    "created_at": now,
                }
            ]
        )
        return True

    async def get(self, run_id: str, *, lock: bool = False) -> Row | None:
        suffix = self.conn.for_update if lock else ""
        return await self.conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND namespace_id = $2{suffix}", run_id, self.namespace_id
        )

    async def find_by_reference(self, workflow: str, version: str, reference_id: str) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = $1 AND workflow_name = $2 AND version = $3 "
            "AND reference_id = $4",
            self.namespace_id,
            workflow,
            version,
            reference_id,
        )

    async def update(self, run_id: str, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(_update_sql(columns), run_id, self.namespace_id, *values.values())

    async def exists(self, run_id: str) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM runs WHERE id = $1 AND namespace_id = $2", run_id, self.namespace_id
        )
        return found is not None
