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

_STATE_KINDS = ("tasks", "events", "sleeps", "wait_timeouts", "children")
# PostgreSQL: the five reads of ``state_for`` as one UNION ALL over a common column list (NULL
# where a kind has no such column), ordered per kind as the separate queries are. $1: every run
# id (events); $2: the runs executed before (everything else).
_STATE_IN_ONE_STATEMENT = """
SELECT * FROM (
  SELECT 0 AS kind, run_id, address, seq, name, status, attempts, output, error, next_attempt_at,
         id, NULL AS data, NULL AS reference_id, NULL::bigint AS wake_at, NULL AS parent_address,
         NULL::integer AS parent_seq, NULL AS workflow_name, NULL AS version,
         NULL AS o_text, created_at AS o_num, id AS o_tie
    FROM tasks WHERE run_id = ANY($2) AND status <> 'discarded'
  UNION ALL
  SELECT 1, run_id, NULL, seq, name, NULL, NULL, NULL, NULL, NULL,
         id, data, reference_id, NULL, NULL, NULL, NULL, NULL, name, seq, NULL
    FROM events WHERE run_id = ANY($1)
  UNION ALL
  SELECT 2, run_id, NULL, seq, name, status, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, wake_at, NULL, NULL, NULL, NULL, name, seq, NULL
    FROM sleeps WHERE run_id = ANY($2)
  UNION ALL
  SELECT 3, run_id, NULL, seq, name, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM wait_timeouts WHERE run_id = ANY($2)
  UNION ALL
  SELECT 4, parent_run_id, NULL, NULL, NULL, status, NULL, output, error, NULL,
         id, NULL, NULL, NULL, parent_address, parent_seq, workflow_name, version, NULL, NULL, id
    FROM runs WHERE parent_run_id = ANY($2)
) AS state
ORDER BY kind, o_text, o_num, o_tie
"""


class StepRepository:
    """Task entries, events, sleeps and wait timeouts of runs in one namespace."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    # -- loading a run's state for replay --------------------------------------------------

    async def state_for(
        self, run_ids: Sequence[str], *, first_claims: Sequence[str] = ()
    ) -> dict[str, dict[str, list[Row]]]:
        """Every live task entry, event, sleep and wait timeout of ``run_ids``, in replay order.

        ``first_claims`` (a subset of ``run_ids``) were never executed before: only events (sent
        while they were queued) can exist for them, so the other tables are not read for them.
        """
        state: dict[str, dict[str, list[Row]]] = {
            run_id: {"tasks": [], "events": [], "sleeps": [], "wait_timeouts": [], "children": []} for run_id in run_ids
        }
        if not run_ids:
            return state
        queries = {
            "tasks": "SELECT run_id, address, seq, name, status, attempts, output, error, next_attempt_at "
            "FROM tasks WHERE {ids} AND status <> 'discarded' ORDER BY created_at, id",
            "events": "SELECT run_id, id, name, seq, data, reference_id FROM events WHERE {ids} ORDER BY name, seq",
            "sleeps": "SELECT run_id, name, seq, status, wake_at FROM sleeps WHERE {ids} ORDER BY name, seq",
            "wait_timeouts": "SELECT run_id, name, seq FROM wait_timeouts WHERE {ids}",
            "children": "SELECT parent_run_id AS run_id, id, parent_address, parent_seq, workflow_name, version, "
            "status, output, error FROM runs WHERE {ids} ORDER BY id",
        }
        fresh = set(first_claims)
        executed = [r for r in run_ids if r not in fresh]
        if self.conn.is_postgres:
            # One round trip instead of five: a resumed run's claim is on the path of every wake-up.
            for row in await self.conn.fetch(_STATE_IN_ONE_STATEMENT, list(run_ids), executed):
                state[row["run_id"]][_STATE_KINDS[row["kind"]]].append(row)
            return state
        for kind, template in queries.items():
            ids = list(run_ids) if kind == "events" else executed
            if not ids:
                continue
            p = Params()
            column = "parent_run_id" if kind == "children" else "run_id"
            sql = template.format(ids=self.conn.any_of(p, column, ids))
            for row in await self.conn.fetch(sql, *p.values):
                state[row["run_id"]][kind].append(row)
        return state

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
