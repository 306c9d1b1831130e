"""The audit log and the shared rate-limit counters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam.repos.rows import Row, all_rows
from aiki.iam.tables import (
    audit_log,
    rate_limits,
)


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(audit_log.insert().values(**values))

    async def list(self, organization_id: str, *, before_id: int | None, limit: int) -> list[Row]:
        query = audit_log.select().where(audit_log.c.organization_id == organization_id)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        return all_rows(await self.conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit)))


_HIT_SQL = sa.text(
    "INSERT INTO rate_limits (key, window_start, count) VALUES (:key, :now, :hits) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN rate_limits.window_start <= :cutoff THEN :hits ELSE rate_limits.count + :hits END, "
    "window_start = CASE WHEN rate_limits.window_start <= :cutoff THEN :now ELSE rate_limits.window_start END "
    "RETURNING count, window_start"
)


_STRIKE_SQL = sa.text(
    "INSERT INTO rate_limits (key, window_start, count) VALUES (:key, :now, 1) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN rate_limits.window_start <= :cutoff THEN 1 ELSE rate_limits.count + 1 END, "
    "window_start = :now "
    "RETURNING count"
)


class RateLimitRepository:
    """Fixed-window counters in the database, so every replica counts the same attempts."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def hit(self, key: str, now: int, window_ms: int, hits: int = 1) -> tuple[int, int]:
        """Count ``hits`` attempts under ``key``; return the count in the current window and its start."""
        params = {"key": key, "now": now, "cutoff": now - window_ms, "hits": hits}
        result = await self.conn.execute(_HIT_SQL, params)
        row = result.one()
        return int(row[0]), int(row[1])

    async def clear(self, keys: Sequence[str]) -> None:
        await self.conn.execute(rate_limits.delete().where(rate_limits.c.key.in_(list(keys))))

    async def strike(self, key: str, now: int, forget_ms: int) -> int:
        """Count one more failure under ``key`` and remember ``now`` as the latest (``window_start``);
        a count whose latest failure is ``forget_ms`` old or older starts again. Returns the count."""
        result = await self.conn.execute(_STRIKE_SQL, {"key": key, "now": now, "cutoff": now - forget_ms})
        return int(result.one()[0])

    async def read(self, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``key -> (count, window_start)`` of the rows that exist."""
        query = sa.select(rate_limits.c.key, rate_limits.c.count, rate_limits.c.window_start).where(
            rate_limits.c.key.in_(list(keys))
        )
        return {str(key): (int(count), int(start)) for key, count, start in (await self.conn.execute(query)).all()}
