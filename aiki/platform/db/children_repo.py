"""SQL for run trees: a run's children, and the parent a child's ending wakes."""

from __future__ import annotations

from collections.abc import Sequence

from aiki.platform.db.raw import Params, Row
from aiki.platform.db.run_rows import CHILD_COLUMNS, RUN_COLUMNS, RunRows
from aiki.platform.db.statuses import AWAITING_CHILD, QUEUED


class ChildQueries(RunRows):
    """The run-tree queries of :class:`~aiki.platform.db.runs_repo.RunRepository`."""

    async def find_child(self, parent_id: str, address: str, seq: int) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {CHILD_COLUMNS} FROM runs WHERE parent_run_id = $1 AND parent_address = $2 AND parent_seq = $3 "
            "AND namespace_id = $4",
            parent_id,
            address,
            seq,
            self.namespace_id,
        )

    async def children_of(self, parent_ids: Sequence[str], *, lock: bool = False) -> list[Row]:
        """Every child run of ``parent_ids`` (any status), locked for update when asked."""
        p = Params(self.namespace_id)
        suffix = " ORDER BY id" + (self.conn.for_update if lock else "")
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = $1 AND "
            f"{self.conn.any_of(p, 'parent_run_id', list(parent_ids))}{suffix}",
            *p.values,
        )

    async def wake_parent(self, parent_id: str, wait_key: str, now: int) -> Row | None:
        """Queue ``parent_id`` if it is suspended on ``wait_key``; return its attempt if it was.

        ``wait_event``/``wait_seq`` stay: the next activation names the wait it resumes.
        """
        return await self.conn.fetchrow(
            f"UPDATE runs SET status = {QUEUED}, queued_at = $3, wake_at = NULL, "
            f"updated_at = $3 WHERE id = $1 AND namespace_id = $2 AND status = {AWAITING_CHILD} AND wait_event = $4 "
            "RETURNING attempt",
            parent_id,
            self.namespace_id,
            now,
            wait_key,
        )
