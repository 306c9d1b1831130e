"""SQL for what happens inside a run: task entries, events, sleeps and wait timeouts.

Driver-level SQL (see ``raw.py``): task records and replay state are read and written on every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Repository, Row
from aiki.platform.db.statuses import HELD, SLEEP_SLEEPING, TASK_DISCARDED, record_task_once

_TASK_UPSERT = record_task_once("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)")

# PostgreSQL only: fencing, the lease extension and the upsert in ONE statement (one round trip, its
# own transaction). The fence locks the run's row first, as the two-step version does, and the task
# row is written only when the fence held. The lease is extended only once less than half of it is
# left ($16): rewriting the run row on every task would add a row version (and an entry in each of
# the table's indexes, ``wake_at`` being indexed) per task. Parameters are cast because an
# INSERT ... SELECT does not infer their types from the target columns.
_TASK_RECORD_FENCED = (
    "WITH fence AS (SELECT id, wake_at, status FROM runs "
    f"WHERE id = $3 AND namespace_id = $2 AND revision = $14 AND {HELD} FOR NO KEY UPDATE), "
    "ext AS (UPDATE runs SET updated_at = $13, wake_at = $15 FROM fence "
    "WHERE runs.id = fence.id "
    "AND (fence.wake_at IS NULL OR fence.wake_at < $16::bigint)), "
    "ins AS (INSERT INTO tasks (id, namespace_id, run_id, address, seq, name, status, attempts, input, output, "
    "error, next_attempt_at, created_at, updated_at) "
    "SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::int, $6::varchar, $7::varchar, $8::int, "
    "$9::text, $10::text, $11::text, $12::bigint, $13::bigint, $13::bigint FROM fence "
    "ON CONFLICT (run_id, address, seq) WHERE status <> 'discarded' DO UPDATE SET "
    "status = excluded.status, attempts = excluded.attempts, output = excluded.output, error = excluded.error, "
    "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at "
    "WHERE tasks.status = 'awaiting_retry' RETURNING id) "
    "SELECT (SELECT count(*) FROM fence) AS held, (SELECT count(*) FROM ins) AS recorded, "
    "(SELECT count(*) FROM fence WHERE status = 'paused') AS paused"
)


STATE_KINDS = ("tasks", "events", "sleeps", "wait_timeouts", "children")


class StepRepository(Repository):
    """Task entries, events, sleeps and wait timeouts of runs in one namespace.

    ``StepRepository(conn, ns)`` is the subclass of ``conn``'s database.
    """

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
        fresh = set(first_claims)
        await self._load_state(state, list(run_ids), [r for r in run_ids if r not in fresh])
        return state

    async def _load_state(
        self, state: dict[str, dict[str, list[Row]]], run_ids: list[str], executed: list[str]
    ) -> None:
        """Append to ``state`` (by run, by kind) every event of ``run_ids``, and every live task
        entry, sleep, wait timeout and child of ``executed``, in replay order."""
        raise NotImplementedError

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

    async def record_task_fenced(
        self, run_id: str, revision: int, lease_until: int, extend_below: int, v: Mapping[str, Any]
    ) -> tuple[bool, bool, bool]:
        """PostgreSQL: fence, extend the lease and upsert in one statement (see ``upsert_task``).

        The lease becomes ``lease_until`` when it ends before ``extend_below``.

        Returns ``(held, recorded, paused)``: whether the run is still held at ``revision``, whether
        the entry was written (False when a finished entry already holds this address and seq),
        and whether a pause of the run is requested (``RunRepository.touch_if_held``).
        """
        row = await self.conn.fetchrow(
            _TASK_RECORD_FENCED,
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
            revision,
            lease_until,
            extend_below,
        )
        assert row is not None
        return row["held"] == 1, row["recorded"] == 1, row["paused"] == 1

    async def get_task(self, run_id: str, address: str, seq: int) -> Row | None:
        return await self.conn.fetchrow(
            "SELECT status, attempts, output FROM tasks WHERE run_id = $1 AND namespace_id = $2 "
            f"AND address = $3 AND seq = $4 AND status <> {TASK_DISCARDED}",
            run_id,
            self.namespace_id,
            address,
            seq,
        )

    async def discard_tasks(self, run_id: str, statuses: Sequence[str], now: int) -> None:
        p = Params(run_id, self.namespace_id, now)
        await self.conn.execute(
            f"UPDATE tasks SET status = {TASK_DISCARDED}, updated_at = $3 WHERE run_id = $1 AND namespace_id = $2 "
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
            f"VALUES ($1, $2, $3, $4, $5, {SLEEP_SLEEPING}, $6, $7) ON CONFLICT (run_id, name, seq) DO NOTHING",
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
            f"AND status = {SLEEP_SLEEPING}",
            run_id,
            self.namespace_id,
            name,
            seq,
        )
        return None if value is None else int(value)

    async def finish_sleeps(self, run_id: str, status: str, *, due_by: int | None = None) -> None:
        sql = f"UPDATE sleeps SET status = $3 WHERE run_id = $1 AND namespace_id = $2 AND status = {SLEEP_SLEEPING}"
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
