"""SQL for push delivery: the endpoints the runtime serves, their breaker, and the attempt rows.

:class:`PushTargetRepository` is the runtime's view across namespaces (like the timer loop's
``DueRunRepository``): the enabled endpoints of every tenant, each handed to a deliverer that acts
through a namespace-scoped :class:`DeliveryRepository`. Portable SQL (both databases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiki.platform.db.raw import RawConn, Row
from aiki.platform.db.statuses import HELD

TARGET_COLUMNS = (
    "id, namespace_id, url, versions, pools, concurrency, timeout_ms, secret, previous_secret, "
    "previous_secret_expires_at, updated_at"
)
BREAKER_COLUMNS = "breaker, breaker_until, breaker_opens, consecutive_failures"
ATTEMPT_COLUMNS = (
    "endpoint_id",
    "run_id",
    "revision",
    "attempt",
    "outcome",
    "status_code",
    "latency_ms",
    "error",
    "created_at",
)
DELIVERY_COLUMNS = "id, endpoint_id, run_id, revision, attempt, outcome, status_code, latency_ms, error, created_at"


class PushTargetRepository:
    """The enabled endpoints of every namespace (deliberately unscoped: the runtime serves all
    tenants and gives each endpoint to a deliverer scoped to its namespace)."""

    def __init__(self, conn: RawConn) -> None:
        self.conn = conn

    async def enabled(self) -> list[Row]:
        return await self.conn.fetch(f"SELECT {TARGET_COLUMNS} FROM endpoints WHERE enabled ORDER BY id")


class DeliveryRepository:
    """Endpoints' breakers and delivery attempts of one namespace."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def state(self, endpoint_id: str, lease_owner: str) -> Row | None:
        """The breaker of an enabled endpoint and ``in_flight``: its runs leased to ``lease_owner``
        (every replica's). None when it is gone or disabled."""
        return await self.conn.fetchrow(
            f"SELECT {BREAKER_COLUMNS}, (SELECT count(*) FROM runs WHERE namespace_id = $2 AND lease_owner = $3 "
            f"AND {HELD}) AS in_flight FROM endpoints WHERE id = $1 AND namespace_id = $2 AND enabled",
            endpoint_id,
            self.namespace_id,
            lease_owner,
        )

    async def lock(self, endpoint_id: str) -> Row | None:
        """Lock the endpoint's row until the transaction ends (PostgreSQL; SQLite's transaction
        holds the database) and read its breaker; None when it is gone."""
        return await self.conn.fetchrow(
            f"SELECT {BREAKER_COLUMNS}, enabled FROM endpoints "
            f"WHERE id = $1 AND namespace_id = $2{self.conn.for_update}",
            endpoint_id,
            self.namespace_id,
        )

    async def in_flight(self, lease_owner: str) -> int:
        """Runs leased to ``lease_owner`` (an endpoint's deliveries, every replica's)."""
        found = await self.conn.fetchval(
            f"SELECT count(*) FROM runs WHERE namespace_id = $1 AND lease_owner = $2 AND {HELD}",
            self.namespace_id,
            lease_owner,
        )
        return int(found or 0)

    async def take_probe(self, endpoint_id: str, now: int, until: int) -> bool:
        """Make an open breaker whose cooldown is over (or a half-open one whose probe was lost)
        half-open until ``until``, for this caller only: True when it did."""
        changed = await self.conn.execute(
            "UPDATE endpoints SET breaker = 'half_open', breaker_until = $3 "
            "WHERE id = $1 AND namespace_id = $2 AND breaker IN ('open', 'half_open') "
            "AND (breaker_until IS NULL OR breaker_until <= $4)",
            endpoint_id,
            self.namespace_id,
            until,
            now,
        )
        return changed == 1

    async def update_endpoint(self, endpoint_id: str, values: Mapping[str, Any]) -> bool:
        """Set breaker and last-delivery columns of an endpoint; False when it is gone."""
        columns = tuple(values)
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
        changed = await self.conn.execute(
            f"UPDATE endpoints SET {sets} WHERE id = $1 AND namespace_id = $2",
            endpoint_id,
            self.namespace_id,
            *values.values(),
        )
        return changed == 1

    async def insert_delivery(self, values: Mapping[str, Any]) -> bool:
        """One attempt row (``endpoint_id, run_id, revision, attempt, outcome, status_code,
        latency_ms, error, created_at``), unless its endpoint is gone: whether it was written."""
        changed = await self.conn.execute(
            "INSERT INTO endpoint_deliveries (namespace_id, endpoint_id, run_id, revision, attempt, outcome, "
            "status_code, latency_ms, error, created_at) "
            "SELECT CAST($1 AS VARCHAR), CAST($2 AS VARCHAR), CAST($3 AS VARCHAR), CAST($4 AS INTEGER), "
            "CAST($5 AS INTEGER), CAST($6 AS VARCHAR), CAST($7 AS INTEGER), CAST($8 AS INTEGER), CAST($9 AS TEXT), "
            "CAST($10 AS BIGINT) WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = $2 AND namespace_id = $1)",
            self.namespace_id,
            *(values[c] for c in ATTEMPT_COLUMNS),
        )
        return changed == 1

    async def by_run(self, run_id: str) -> list[Row]:
        """A run's delivery attempts in the order they were sent: by revision (each activation and
        each retry of one moves it on). Not by id: a row is written when its answer arrives, and the
        answer to one activation may arrive after the next activation was already delivered (the
        endpoint's writes reach the server before its HTTP answer does)."""
        return await self.conn.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM endpoint_deliveries WHERE namespace_id = $1 AND run_id = $2 "
            "ORDER BY revision, attempt, id",
            self.namespace_id,
            run_id,
        )

    async def by_endpoint(self, endpoint_id: str, limit: int) -> list[Row]:
        """An endpoint's latest delivery attempts, newest first."""
        return await self.conn.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM endpoint_deliveries WHERE namespace_id = $1 AND endpoint_id = $2 "
            "ORDER BY created_at DESC, id DESC LIMIT $3",
            self.namespace_id,
            endpoint_id,
            limit,
        )
