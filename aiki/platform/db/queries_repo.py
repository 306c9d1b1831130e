"""SQL for the read side: run lists and details, grouped history, the catalogue and workers.

Driver-level SQL (see ``raw.py``) like the other run repositories, so rows have the same shape
(``views.run_view`` reads them). Tenancy is fixed when a repository is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiki.platform.db.raw import Params, RawConn, Row
from aiki.platform.db.run_rows import RUN_COLUMNS
from aiki.platform.db.statuses import RUNNING, TASK_DISCARDED
from aiki.platform.domain.queries import DEFAULT_POOL, RunFilter

_CHILD_COLUMNS = "id, workflow_name, version, status, reference_id, created_at, updated_at, finished_at"


class QueryRepository:
    """Read-only queries over the runs, steps, catalogue and workers of one namespace."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    def _where(self, p: Params, f: RunFilter) -> list[str]:
        where = ["namespace_id = $1"]
        for column, value in (
            ("workflow_name", f.workflow),
            ("version", f.version),
            ("reference_id", f.reference_id),
            ("parent_run_id", f.parent_run_id),
        ):
            if value is not None:
                where.append(f"{column} = {p(value)}")
        if f.pool is not None:
            where.append("pool IS NULL" if f.pool == DEFAULT_POOL else f"pool = {p(f.pool)}")
        prefix = f.reference_prefix
        if prefix is not None:
            # An exact prefix test on both databases (SQLite's LIKE ignores case; ranges depend on
            # the collation).
            where.append(f"substr(reference_id, 1, {p(len(prefix))}) = {p(prefix)}")
        if f.statuses:
            where.append(self.conn.any_of(p, "status", list(f.statuses)))
        if f.created_after is not None:
            where.append(f"created_at >= {p(f.created_after)}")
        if f.created_before is not None:
            where.append(f"created_at < {p(f.created_before)}")
        return where

    async def page(self, f: RunFilter, *, before_id: str | None, limit: int) -> list[Row]:
        """Runs matching ``f``, newest first, with ids below ``before_id`` (the keyset cursor).

        Ids are unique and never change, so a page boundary is stable: runs inserted while a client
        pages may or may not appear, but every run that existed before it started appears exactly
        once.
        """
        p = Params(self.namespace_id)
        where = self._where(p, f)
        if before_id is not None:
            where.append(f"id < {p(before_id)}")
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {p(limit)}"
        return await self.conn.fetch(sql, *p.values)

    async def live_ids(self, f: RunFilter, statuses: Sequence[str], *, before_id: str | None, limit: int) -> list[str]:
        """Ids of runs matching ``f`` whose status is one of ``statuses``, newest first."""
        p = Params(self.namespace_id)
        where = self._where(p, f)
        where.append(self.conn.any_of(p, "status", list(statuses)))
        if before_id is not None:
            where.append(f"id < {p(before_id)}")
        sql = f"SELECT id FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {p(limit)}"
        return [r["id"] for r in await self.conn.fetch(sql, *p.values)]

    async def get_run(self, run_id: str) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND namespace_id = $2", run_id, self.namespace_id
        )

    async def tasks(self, run_id: str) -> list[Row]:
        """Every task entry of a run, discarded ones too, in the order they were first recorded."""
        columns = (
            "id, name, address, seq, status, attempts, input, output, error, next_attempt_at, created_at, updated_at"
        )
        # Two halves so each can use its partial index (live entries, discarded entries).
        rows = await self.conn.fetch(
            f"SELECT {columns} FROM tasks WHERE run_id = $1 AND namespace_id = $2 AND status <> {TASK_DISCARDED} "
            f"UNION ALL SELECT {columns} FROM tasks "
            f"WHERE run_id = $1 AND namespace_id = $2 AND status = {TASK_DISCARDED}",
            run_id,
            self.namespace_id,
        )
        return sorted(rows, key=lambda r: (r["created_at"], r["id"]))

    async def events(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, name, seq, data, reference_id, created_at FROM events "
            "WHERE run_id = $1 AND namespace_id = $2 ORDER BY created_at, name, seq",
            run_id,
            self.namespace_id,
        )

    async def sleeps(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT name, seq, status, wake_at, created_at FROM sleeps "
            "WHERE run_id = $1 AND namespace_id = $2 ORDER BY created_at, name, seq",
            run_id,
            self.namespace_id,
        )

    async def wait_timeouts(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT name, seq, created_at FROM wait_timeouts "
            "WHERE run_id = $1 AND namespace_id = $2 ORDER BY created_at, name, seq",
            run_id,
            self.namespace_id,
        )

    async def children(self, run_id: str, limit: int) -> list[Row]:
        """Runs whose parent is ``run_id``, oldest first."""
        return await self.conn.fetch(
            f"SELECT {_CHILD_COLUMNS} FROM runs WHERE parent_run_id = $1 AND namespace_id = $2 ORDER BY id LIMIT $3",
            run_id,
            self.namespace_id,
            limit,
        )

    async def history(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, attempt, from_status, to_status, reason, created_at FROM run_history "
            "WHERE namespace_id = $1 AND run_id = $2 ORDER BY id",
            self.namespace_id,
            run_id,
        )

    async def versions(self) -> list[Row]:
        return await self.conn.fetch(
            "SELECT v.workflow_name, v.version, v.created_at, v.updated_at, w.created_at AS workflow_created_at "
            "FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id "
            "WHERE v.namespace_id = $1 ORDER BY v.workflow_name, v.version",
            self.namespace_id,
        )

    async def run_counts(self) -> list[Row]:
        """Runs per (workflow, version, status)."""
        return await self.conn.fetch(
            "SELECT workflow_name, version, status, count(*) AS n FROM runs WHERE namespace_id = $1 "
            "GROUP BY workflow_name, version, status",
            self.namespace_id,
        )

    async def workers(self) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, host, pid, versions, pools, concurrency, started_at, last_heartbeat_at FROM workers "
            "WHERE namespace_id = $1 ORDER BY last_heartbeat_at DESC, id",
            self.namespace_id,
        )

    async def leased_counts(self) -> dict[str, int]:
        """Runs currently leased (``running``), per lease owner."""
        rows = await self.conn.fetch(
            f"SELECT lease_owner, count(*) AS n FROM runs WHERE namespace_id = $1 AND status = {RUNNING} "
            "AND lease_owner IS NOT NULL GROUP BY lease_owner",
            self.namespace_id,
        )
        return {r["lease_owner"]: int(r["n"]) for r in rows}
