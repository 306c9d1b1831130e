"""SQL for leases: a worker's heartbeat, and the runs a stopping worker gives back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiki.platform.db.raw import Params, Row
from aiki.platform.db.run_rows import RunRows
from aiki.platform.db.statuses import HELD_STATUSES, PAUSED, QUEUED, RUNNING
from aiki.platform.domain import run_states as rs


class LeaseQueries(RunRows):
    """The lease queries of :class:`~aiki.platform.db.runs_repo.RunRepository`."""

    async def held_states(self, run_ids: Sequence[str]) -> list[Row]:
        """``id, revision, status, lease_owner`` of these runs (those that exist)."""
        p = Params(self.namespace_id)
        ids = self.conn.any_of(p, "id", list(run_ids))
        return await self.conn.fetch(
            f"SELECT id, revision, status, lease_owner FROM runs WHERE namespace_id = $1 AND {ids}", *p.values
        )

    async def heartbeat(
        self, worker_id: str, held: Mapping[str, int], now: int, lease_until: int
    ) -> tuple[list[str], list[str]]:
        """Extend the leases ``worker_id`` still holds.

        Returns the ids whose revision moved on (stale), and those a pause is requested of
        (``paused`` but still held by ``worker_id``: alive, its lease extended too).
        """
        if not held:
            return [], []
        rows = await self.held_states(list(held))
        mine = [r for r in rows if r["revision"] == held[r["id"]] and r["lease_owner"] == worker_id]
        pausing = [r["id"] for r in mine if r["status"] == rs.PAUSED]
        alive = [r["id"] for r in mine if r["status"] == rs.RUNNING] + pausing
        if alive:
            p = Params(self.namespace_id, now, lease_until, worker_id)
            held_by_me = (
                f"namespace_id = $1 AND {HELD_STATUSES} AND lease_owner = $4 AND {self.conn.any_of(p, 'id', alive)}"
            )
            await self._extend_leases(held_by_me, p)
        kept = set(alive) | set(pausing)
        return [run_id for run_id in held if run_id not in kept], pausing

    async def _extend_leases(self, held_by_me: str, p: Params) -> None:
        """Set ``wake_at`` to $3 and ``updated_at`` to $2 on the runs ``held_by_me`` selects."""
        raise NotImplementedError

    async def release(self, worker_id: str, held: Mapping[str, int], reason: str, now: int) -> list[str]:
        """Put the runs ``worker_id`` holds, each at its revision in ``held``, back in the queue.

        The revision moves on (fencing any late write of the old execution); no recovery is counted,
        the lease was not lost but given back. A pausing run (paused, still held) is released and
        stays paused, as at its step boundary. Returns the ids released; a run that moved on (ended,
        suspended, cancelled, recovered by another worker) is left alone.
        """
        released: list[str] = []
        for run_id, revision in held.items():
            row = await self.conn.fetchrow(
                f"UPDATE runs SET status = CASE WHEN status = {RUNNING} THEN {QUEUED} ELSE status END, "
                "revision = revision + 1, lease_owner = NULL, wake_at = NULL, "
                f"queued_at = CASE WHEN status = {RUNNING} THEN $5 ELSE queued_at END, updated_at = $5 "
                "WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND lease_owner = $4 "
                f"AND status IN ({RUNNING}, {PAUSED}) "
                "RETURNING attempt, status",
                run_id,
                self.namespace_id,
                revision,
                worker_id,
                now,
            )
            if row is None:
                continue
            released.append(run_id)
            await self.add_history(
                [
                    {
                        "run_id": run_id,
                        "attempt": row["attempt"],
                        "from_status": rs.RUNNING if row["status"] == rs.QUEUED else rs.PAUSED,
                        "to_status": row["status"],
                        "reason": reason,
                        "created_at": now,
                    }
                ]
            )
        return released
