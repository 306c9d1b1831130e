"""SQL for schedules. Tenancy is fixed when a repository is built.

The schedule loop reads due schedules across namespaces through :class:`DueScheduleRepository`
and acts on each through a namespace-scoped :class:`ScheduleRepository`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Repository, Row, tenant_insert_sql, tenant_update_sql

SCHEDULE_COLUMNS = (
    "id, namespace_id, identity, reference_id, definition_hash, workflow_name, version, input, input_hash, "
    "cron, every_ms, timezone, overlap, status, next_fire_at, last_fire_at, last_run_id, created_at, updated_at, "
    "retry, pool"
)


class ScheduleRepository(Repository):
    """Schedules of one namespace. ``ScheduleRepository(conn, ns)`` is the subclass of ``conn``'s database."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def insert(self, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(tenant_insert_sql("schedules", columns), self.namespace_id, *values.values())

    async def get(self, schedule_id: str, *, lock: bool = False) -> Row | None:
        suffix = self.conn.for_update if lock else ""
        return await self.conn.fetchrow(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND namespace_id = $2{suffix}",
            schedule_id,
            self.namespace_id,
        )

    async def find_by_identity(self, identity: str) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE namespace_id = $1 AND identity = $2",
            self.namespace_id,
            identity,
        )

    async def update(self, schedule_id: str, values: Mapping[str, Any]) -> None:
        sql = tenant_update_sql("schedules", tuple(values))
        await self.conn.execute(sql, schedule_id, self.namespace_id, *values.values())

    async def delete(self, schedule_id: str) -> bool:
        deleted = await self.conn.execute(
            "DELETE FROM schedules WHERE id = $1 AND namespace_id = $2", schedule_id, self.namespace_id
        )
        return deleted == 1

    async def page(
        self,
        *,
        workflow: str | None = None,
        version: str | None = None,
        status: str | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Row]:
        """Schedules newest first, keyset-paginated by id (ids are time-ordered)."""
        p = Params(self.namespace_id)
        where = ["namespace_id = $1"]
        for column, value in (("workflow_name", workflow), ("version", version), ("status", status)):
            if value is not None:
                where.append(f"{column} = {p(value)}")
        if after_id is not None:
            where.append(f"id < {p(after_id)}")
        sql = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {p(limit)}"
        return await self.conn.fetch(sql, *p.values)

    async def announce(self) -> None:
        """Tell the schedule loops of other server processes that a deadline may have moved closer."""
        raise NotImplementedError


class DueScheduleRepository:
    """The schedule loop's view: active schedules whose next occurrence is due, in every namespace.

    Deliberately unscoped, like the timer loop's reader: the runtime serves all tenants and hands
    each schedule to a namespace-scoped repository to act on.
    """

    def __init__(self, conn: RawConn) -> None:
        self.conn = conn

    async def take_due(self, now: int, limit: int) -> list[Row]:
        """Lock up to ``limit`` due schedules; on PostgreSQL rows another replica holds are skipped."""
        return await self.conn.fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE status = 'active' AND next_fire_at IS NOT NULL "
            f"AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2{self.conn.skip_locked}",
            now,
            limit,
        )

    async def next_fire_at(self) -> int | None:
        value = await self.conn.fetchval(
            "SELECT min(next_fire_at) FROM schedules WHERE status = 'active' AND next_fire_at IS NOT NULL"
        )
        return int(value) if value is not None else None
