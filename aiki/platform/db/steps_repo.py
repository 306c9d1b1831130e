"""SQL for what happens inside a run: task entries, events, sleeps and wait timeouts.

Driver-level SQL (see ``raw.py``): task records and replay state are read and written on every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Row

_TASK_UPSERT = (
    "INSERT INTO tasks (id, namespace_id, run_id, address, seq, name, status, attempts, input, output, error, "
    "next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) "
    # A task result is recorded at most once per (run, address, seq); only a pending retry is
    # overwritten by its next attempt.
    "ON CONFLICT (run_id, address, seq) WHERE status <> 'discarded' DO UPDATE SET "
    "status = excluded.status, attempts = excluded.attempts, output = excluded.output, error = excluded.error, "
    "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at "
    "WHERE tasks.status = 'awaiting_retry' RETURNING id"
)


class StepRepository:
    """Task entries, events, sleeps and wait timeouts of runs in one namespace."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    # -- tasks ----------------------------------------------------------------------------

    async def upsert_task(self, run_id: str, v: Mapping[str, Any]) -> bool:
        """Record a task attempt; an ``awaiting_retry`` entry is overwritten by its next attempt.

        Returns False when a finished entry already holds this (address, seq).
        """
        row = await self.conn.fetchrow(
            _TASK_UPSERT,
            v["id"],
            self.namespace_id,
            run_id,
            v["address"],
            v["seq"],
            v["name"],
            v["status"],
            v["attempts"],
            v["input"],
            v["output"],
            v["error"],
            v["next_attempt_at"],
            v["created_at"],
        )
        return row is not None

    async def get_task(self, run_id: str, address: str, seq: int) -> Row | None:
        return await self.conn.fetchrow(
            "SELECT status, attempts, output FROM tasks WHERE run_id = $1 AND namespace_id = $2 "
            "AND address = $3 AND seq = $4 AND status <> 'discarded'",
            run_id,
            self.namespace_id,
            address,
            seq,
        )

    async def discard_tasks(self, run_id: str, statuses: Sequence[str], now: int) -> None:
        p = Params(run_id, self.namespace_id, now)
        await self.conn.execute(
            "UPDATE tasks SET status = 'discarded', updated_at = $3 WHERE run_id = $1 AND namespace_id = $2 "
            f"AND {self.conn.any_of(p, 'status', list(statuses))}",
            *p.values,
        )

    async def list_tasks(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT * FROM tasks WHERE run_id = $1 AND namespace_id = $2 ORDER BY created_at, id",
            run_id,
            self.namespace_id,
        )

    # -- events ---------------------------------------------------------------------------

    async def find_event(self, run_id: str, name: str, reference_id: str) -> Row | None:
        return await self.conn.fetchrow(
            "SELECT id FROM events WHERE run_id = $1 AND namespace_id = $2 AND name = $3 AND reference_id = $4",
            run_id,
            self.namespace_id,
            name,
            reference_id,
        )

    async def append_event(
        self, event_id: str, run_id: str, name: str, data: str, reference_id: str | None, now: int
    ) -> None:
        """Append an event at the next ``seq`` of its name (callers hold the run's row lock)."""
        await self.conn.execute(
            "INSERT INTO events (id, namespace_id, run_id, name, seq, data, reference_id, created_at) "
            "VALUES ($1, $2, $3, $4, "
            "(SELECT COALESCE(MAX(seq) + 1, 0) FROM events WHERE run_id = CAST($3 AS VARCHAR) "
            "AND name = CAST($4 AS VARCHAR)), $5, $6, $7)",
            event_id,
            self.namespace_id,
            run_id,
            name,
            data,
            reference_id,
            now,
        )

    async def events_from(self, run_id: str, name: str, from_seq: int) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, name, seq, data, reference_id FROM events WHERE run_id = $1 AND namespace_id = $2 "
            "AND name = $3 AND seq >= $4 ORDER BY seq",
            run_id,
            self.namespace_id,
            name,
            from_seq,
        )

    # -- sleeps and wait timeouts -----------------------------------------------------------

    async def start_sleep(self, sleep_id: str, run_id: str, name: str, seq: int, wake_at: int, now: int) -> int:
        """Create sleep (name, seq) unless it exists; return its ``wake_at``."""
        await self.conn.execute(
            "INSERT INTO sleeps (id, namespace_id, run_id, name, seq, status, wake_at, created_at) "
            "VALUES ($1, $2, $3, $4, $5, 'sleeping', $6, $7) ON CONFLICT (run_id, name, seq) DO NOTHING",
            sleep_id,
            self.namespace_id,
            run_id,
            name,
            seq,
            wake_at,
            now,
        )
        value = await self.conn.fetchval(
            "SELECT wake_at FROM sleeps WHERE run_id = $1 AND name = $2 AND seq = $3", run_id, name, seq
        )
        return int(value)

    async def sleep_wake_at(self, run_id: str, name: str, seq: int) -> int | None:
        """When sleep (name, seq) of the run ends, if it is still sleeping."""
        value = await self.conn.fetchval(
            "SELECT wake_at FROM sleeps WHERE run_id = $1 AND namespace_id = $2 AND name = $3 AND seq = $4 "
            "AND status = 'sleeping'",
            run_id,
            self.namespace_id,
            name,
            seq,
        )
        return None if value is None else int(value)

    async def finish_sleeps(self, run_id: str, status: str, *, due_by: int | None = None) -> None:
        sql = "UPDATE sleeps SET status = $3 WHERE run_id = $1 AND namespace_id = $2 AND status = 'sleeping'"
        args: list[Any] = [run_id, self.namespace_id, status]
        if due_by is not None:
            sql += " AND wake_at <= $4"
            args.append(due_by)
        await self.conn.execute(sql, *args)

    async def add_wait_timeout(self, timeout_id: str, run_id: str, name: str, seq: int, now: int) -> None:
        await self.conn.execute(
            "INSERT INTO wait_timeouts (id, namespace_id, run_id, name, seq, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, name, seq) DO NOTHING",
            timeout_id,
            self.namespace_id,
            run_id,
            name,
            seq,
            now,
        )
