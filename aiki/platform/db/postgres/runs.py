"""PostgreSQL's run statements: one-statement CTEs (one round trip each) and rows skipped when locked."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from aiki.platform.db.due_runs_repo import STALL_PICK, STALL_SET, DueRunRepository
from aiki.platform.db.raw import Params, Row
from aiki.platform.db.run_rows import HISTORY_COLUMNS
from aiki.platform.db.runs_repo import RunRepository, insert_sql
from aiki.platform.db.statuses import QUEUED, RUNNING, SLEEP_COMPLETED, SLEEP_SLEEPING, SLEEPING

# When the PostgreSQL server (re)started, in ms since the epoch.
_PG_UP_SINCE_MS = "(extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint"


@functools.lru_cache(maxsize=256)
def _insert_started_sql(columns: tuple[str, ...]) -> str:
    # The run and its first history row in one statement (one round trip).
    index = {c: i for i, c in enumerate(columns, start=2)}
    return (
        f"WITH r AS ({insert_sql(columns)} RETURNING id) "
        f"INSERT INTO run_history ({HISTORY_COLUMNS}) "
        f"SELECT $1, r.id, ${index['attempt']}, NULL, ${index['status']}, NULL, ${index['created_at']} FROM r"
    )


@functools.lru_cache(maxsize=256)
def _insert_claimed_sql(columns: tuple[str, ...]) -> str:
    # A run inserted as claimed, and the history of both steps, in one statement.
    index = {c: i for i, c in enumerate(columns, start=2)}
    reason = len(columns) + 2
    attempt, created = f"${index['attempt']}::int", f"${index['created_at']}::bigint"
    return (
        f"WITH r AS ({insert_sql(columns)} RETURNING id) "
        f"INSERT INTO run_history ({HISTORY_COLUMNS}) "
        f"SELECT $1, r.id, {attempt}, NULL, {QUEUED}, NULL, {created} FROM r UNION ALL "
        f"SELECT $1, r.id, {attempt}, {QUEUED}, {RUNNING}, ${reason}::text, {created} FROM r"
    )


class PgRunRepository(RunRepository):
    """Runs of one namespace, on PostgreSQL."""

    async def insert_started(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(_insert_started_sql(tuple(values)), self.namespace_id, *values.values())

    async def insert_claimed(self, values: Mapping[str, Any], reason: str) -> None:
        await self.conn.execute(_insert_claimed_sql(tuple(values)), self.namespace_id, *values.values(), reason)

    async def _extend_leases(self, held_by_me: str, p: Params) -> None:
        # A row locked by a slow transaction (a task being recorded, a cancel) is skipped rather
        # than waited for: waiting would stall the extension of every other lease this worker
        # holds until theirs expire too. The skipped run gets its extension on the next beat.
        # The rows are picked once (a materialized CTE), never by a subquery re-run per row.
        await self.conn.execute(
            f"WITH picked AS MATERIALIZED (SELECT id FROM runs WHERE {held_by_me} FOR UPDATE SKIP LOCKED) "
            "UPDATE runs SET wake_at = $3, updated_at = $2 FROM picked WHERE runs.id = picked.id",
            *p.values,
        )


_END_DUE_SLEEPS = f"""
WITH due AS MATERIALIZED (
  SELECT id FROM runs WHERE wake_at IS NOT NULL AND wake_at <= $1 AND status = {SLEEPING}
  ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED
), woken AS (
  UPDATE runs AS r SET status = $3, wake_at = NULL, queued_at = $1, updated_at = $1
  FROM due WHERE r.id = due.id
  RETURNING r.id, r.namespace_id, r.attempt
), slept AS (
  UPDATE sleeps AS s SET status = {SLEEP_COMPLETED} FROM woken
  WHERE s.run_id = woken.id AND s.namespace_id = woken.namespace_id AND s.status = {SLEEP_SLEEPING} AND s.wake_at <= $1
), logged AS (
  INSERT INTO run_history ({HISTORY_COLUMNS})
  SELECT namespace_id, id, attempt, {SLEEPING}, $3, 'sleep ended', $1 FROM woken
)
SELECT id, namespace_id FROM woken
"""


class PgDueRunRepository(DueRunRepository):
    """The timer loop's view, on PostgreSQL: rows another replica holds are skipped."""

    async def end_due_sleeps(self, now: int, limit: int, target: str) -> list[Row]:
        return await self.conn.fetch(_END_DUE_SLEEPS, now, limit, target)

    def _lease_expiry(self, args: list[Any], lease_ttl_ms: int) -> str:
        # Not before the database server has been up for a lease TTL.
        args.append(lease_ttl_ms)
        return f"$1 >= $3 AND $1 >= {_PG_UP_SINCE_MS} + $4"

    def _lease_hold(self, args: list[Any], lease_ttl_ms: int) -> str:
        args.append(lease_ttl_ms)
        return f"GREATEST(min(wake_at), $1::bigint, {_PG_UP_SINCE_MS} + $2::bigint)"

    async def stall(self, queued_before: int, now: int, limit: int) -> list[Row]:
        # Picked once, in a materialized CTE: as ``id IN (SELECT ... LIMIT n SKIP LOCKED)`` the
        # subquery may be re-run per row and go beyond the limit (see ``PgRunRepository._claim``).
        return await self.conn.fetch(
            f"WITH picked AS MATERIALIZED ({STALL_PICK} FOR UPDATE SKIP LOCKED) "
            f"UPDATE runs {STALL_SET} FROM picked "
            f"WHERE runs.id = picked.id AND runs.status = {QUEUED} "
            "RETURNING runs.id, runs.namespace_id, runs.attempt",
            queued_before,
            now,
            limit,
        )
