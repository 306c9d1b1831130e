"""What every query on the ``runs`` table shares: its columns, tenancy, and the history it appends.

The run repository is split by concern into mixins on this base (``runs_repo.py``, ``leases_repo.py``,
``children_repo.py``); each database's subclass of the whole lives in ``postgres/`` or ``sqlite/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.raw import RawConn, Repository, Row

RUN_COLUMNS = (
    "id, namespace_id, workflow_name, version, status, revision, attempt, recoveries, max_recoveries, "
    "input, input_hash, output, error, reference_id, parent_run_id, pool, retry, wake_at, lease_owner, "
    "wait_event, wait_seq, created_at, updated_at, finished_at, parent_address, parent_seq, timeout_ms, "
    "deadline_at, resume_at"
)

CHILD_COLUMNS = "id, parent_run_id, parent_address, parent_seq, workflow_name, version, status, output, error"

HISTORY_COLUMNS = "namespace_id, run_id, attempt, from_status, to_status, reason, created_at"
_HISTORY_INSERT = f"INSERT INTO run_history ({HISTORY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"


class RunRows(Repository):
    """Runs of one namespace: tenancy is fixed when a repository is built."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def add_history(self, entries: Sequence[Mapping[str, Any]]) -> None:
        rows = [
            (
                self.namespace_id,
                e["run_id"],
                e["attempt"],
                e["from_status"],
                e["to_status"],
                e.get("reason"),
                e["created_at"],
            )
            for e in entries
        ]
        if len(rows) == 1:
            await self.conn.execute(_HISTORY_INSERT, *rows[0])
        else:
            await self.conn.executemany(_HISTORY_INSERT, rows)

    async def history(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, attempt, from_status, to_status, reason, created_at FROM run_history "
            "WHERE namespace_id = $1 AND run_id = $2 ORDER BY id",
            self.namespace_id,
            run_id,
        )
