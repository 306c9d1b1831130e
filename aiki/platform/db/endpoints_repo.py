"""SQL for push endpoints and their delivery attempts. Tenancy is fixed when a repository is built.

The management services act through a namespace-scoped :class:`EndpointRepository`; the
runtime's deliverers read the enabled endpoints of every namespace through
:class:`EndpointDirectory`. Statements are the same on both databases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Repository, Row, tenant_insert_sql, tenant_update_sql
from aiki.platform.db.statuses import PAUSED, RUNNING

ENDPOINT_COLUMNS = (
    "id, namespace_id, url, versions, pools, concurrency, timeout_ms, enabled, secret, secret_hint, "
    "previous_secret, previous_secret_expires_at, breaker, breaker_until, breaker_opens, consecutive_failures, "
    "last_delivery_at, last_status_code, last_error, created_at, updated_at"
)

DELIVERED_OUTCOMES = ("completed", "failed", "suspended", "handed_back", "superseded")
"""Outcomes of a delivery the endpoint answered properly; any other outcome is a failed delivery."""

_DELIVERED = ", ".join(f"'{o}'" for o in DELIVERED_OUTCOMES)


class EndpointRepository(Repository):
    """Push endpoints of one namespace, their delivery counts, and what they conflict with."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def insert(self, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(tenant_insert_sql("endpoints", columns), self.namespace_id, *values.values())

    async def get(self, endpoint_id: str, *, lock: bool = False) -> Row | None:
        suffix = self.conn.for_update if lock else ""
        return await self.conn.fetchrow(
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND namespace_id = $2{suffix}",
            endpoint_id,
            self.namespace_id,
        )

    async def endpoints(self, *, enabled_only: bool = False) -> list[Row]:
        """The namespace's endpoints, oldest first (ids are time-ordered)."""
        where = " AND enabled = $2" if enabled_only else ""
        args: tuple[Any, ...] = (self.namespace_id, True) if enabled_only else (self.namespace_id,)
        return await self.conn.fetch(
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE namespace_id = $1{where} ORDER BY id", *args
        )

    async def update(self, endpoint_id: str, values: Mapping[str, Any]) -> bool:
        sql = tenant_update_sql("endpoints", tuple(values))
        changed = await self.conn.execute(sql, endpoint_id, self.namespace_id, *values.values())
        return changed == 1

    async def delete(self, endpoint_id: str) -> bool:
        # Its delivery attempts go with it (the foreign key cascades too; said here for clarity).
        await self.conn.execute(
            "DELETE FROM endpoint_deliveries WHERE endpoint_id = $1 AND namespace_id = $2",
            endpoint_id,
            self.namespace_id,
        )
        deleted = await self.conn.execute(
            "DELETE FROM endpoints WHERE id = $1 AND namespace_id = $2", endpoint_id, self.namespace_id
        )
        return deleted == 1

    async def delivery_counts(self, endpoint_ids: Sequence[str], since: int) -> dict[str, tuple[int, int]]:
        """Per endpoint: the deliveries since ``since`` and how many of them failed (not answered
        with one of :data:`DELIVERED_OUTCOMES`)."""
        if not endpoint_ids:
            return {}
        p = Params(self.namespace_id, since)
        ids = self.conn.any_of(p, "endpoint_id", list(endpoint_ids))
        rows = await self.conn.fetch(
            "SELECT endpoint_id, count(*) AS deliveries, "
            f"sum(CASE WHEN outcome IN ({_DELIVERED}) THEN 0 ELSE 1 END) AS failures "
            f"FROM endpoint_deliveries WHERE namespace_id = $1 AND created_at >= $2 AND {ids} GROUP BY endpoint_id",
            *p.values,
        )
        return {r["endpoint_id"]: (int(r["deliveries"]), int(r["failures"] or 0)) for r in rows}

    async def live_workers(self, seen_since: int) -> list[Row]:
        """``id, versions, last_heartbeat_at`` of the namespace's workers heard from since ``seen_since``."""
        return await self.conn.fetch(
            "SELECT id, versions, last_heartbeat_at FROM workers WHERE namespace_id = $1 AND last_heartbeat_at >= $2 "
            "ORDER BY last_heartbeat_at DESC, id",
            self.namespace_id,
            seen_since,
        )

    async def held_runs(self, owner: str) -> dict[str, int]:
        """Run id → revision of the runs ``owner`` (``endpoint:<id>``) holds a lease on."""
        rows = await self.conn.fetch(
            f"SELECT id, revision FROM runs WHERE namespace_id = $1 AND lease_owner = $2 "
            f"AND status IN ({RUNNING}, {PAUSED})",
            self.namespace_id,
            owner,
        )
        return {r["id"]: int(r["revision"]) for r in rows}

    async def register_version(self, workflow_id: str, version_id: str, workflow: str, version: str, now: int) -> None:
        """Put a version in the catalogue, without schemas, unless it is there already (a worker's
        registration, with its schemas, is kept as it is)."""
        await self.conn.execute(
            "INSERT INTO workflows (id, namespace_id, name, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (namespace_id, name) DO NOTHING",
            workflow_id,
            self.namespace_id,
            workflow,
            now,
        )
        await self.conn.execute(
            "INSERT INTO workflow_versions (id, namespace_id, workflow_id, workflow_name, version, input_schema, "
            "event_schemas, timeout_ms, created_at, updated_at) "
            "SELECT $1, namespace_id, id, name, $4, NULL, NULL, NULL, $5, $5 FROM workflows "
            "WHERE namespace_id = $2 AND name = $3 "
            "ON CONFLICT (namespace_id, workflow_name, version) DO NOTHING",
            version_id,
            self.namespace_id,
            workflow,
            version,
            now,
        )


class EndpointDirectory:
    """The runtime's view: endpoints of every namespace.

    Deliberately unscoped, like the schedule loop's reader: the runtime delivers for all tenants
    and acts on each endpoint through a namespace-scoped :class:`EndpointRepository`.
    """

    def __init__(self, conn: RawConn) -> None:
        self.conn = conn

    async def enabled(self) -> list[Row]:
        """Every enabled endpoint (all columns), oldest first."""
        return await self.conn.fetch(f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE enabled = $1 ORDER BY id", True)
