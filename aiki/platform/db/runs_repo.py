"""SQL for runs: insert, read, update, claim, and the transitions of a run its executor holds.

Driver-level SQL (see ``raw.py``): these statements run on every step of every run. The queries are
split by concern (``leases_repo.py``, ``children_repo.py``; the timer loop's in ``due_runs_repo.py``);
what only one database can run is in its subclass (``postgres/runs.py``, ``sqlite/runs.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.children_repo import ChildQueries
from aiki.platform.db.leases_repo import LeaseQueries
from aiki.platform.db.raw import Params, Row
from aiki.platform.db.run_rows import CHILD_COLUMNS, RUN_COLUMNS
from aiki.platform.db.statuses import HELD, QUEUED, RUNNING
from aiki.platform.domain import run_states as rs
from aiki.platform.domain.queries import DEFAULT_POOL

__all__ = ["CHILD_COLUMNS", "HELD", "RUN_COLUMNS", "RunRepository", "claim_history", "insert_sql"]


@functools.lru_cache(maxsize=256)
def insert_sql(columns: tuple[str, ...]) -> str:
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    return f"INSERT INTO runs (namespace_id, {', '.join(columns)}) VALUES ($1, {placeholders})"


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return f"UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2"


def claim_history(row: Row, worker_id: str, now: int) -> dict[str, Any]:
    """The history entry of ``row`` claimed by ``worker_id``."""
    return {
        "run_id": row["id"],
        "attempt": row["attempt"],
        "from_status": rs.QUEUED,
        "to_status": rs.RUNNING,
        "reason": f"claimed by {worker_id}",
        "created_at": now,
    }


class RunRepository(LeaseQueries, ChildQueries):
    """Runs of one namespace. ``RunRepository(conn, ns)`` is the subclass of ``conn``'s database."""

    async def insert(self, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(insert_sql(columns), self.namespace_id, *values.values())

    async def insert_started(self, values: Mapping[str, Any]) -> None:
        """Insert a new run and its first history row (``None`` → its status, at ``created_at``)."""
        raise NotImplementedError

    async def insert_claimed(self, values: Mapping[str, Any], reason: str) -> None:
        """Insert a new run already claimed (``values`` say by whom) and the history of both
        steps: ``None`` → ``queued``, then ``queued`` → ``running`` for ``reason``."""
        raise NotImplementedError

    async def requeue_unstarted(self, run_id: str, worker_id: str, reason: str, now: int, *, revision: int = 1) -> bool:
        """A run claimed by ``worker_id`` at ``revision`` that never reached it goes back to the
        queue, as if never claimed: no recovery is used, and a first claim's start time and
        execution deadline are undone (the revision still moves on, fencing any write from that
        claim). False when the run moved on meanwhile."""
        row = await self.conn.fetchrow(
            f"UPDATE runs SET status = {QUEUED}, revision = revision + 1, lease_owner = NULL, wake_at = NULL, "
            "queued_at = $4, updated_at = $4, "
            "started_at = CASE WHEN revision = 1 THEN NULL ELSE started_at END, "
            "deadline_at = CASE WHEN revision = 1 THEN NULL ELSE deadline_at END "
            f"WHERE id = $1 AND namespace_id = $2 AND status = {RUNNING} AND revision = $5 AND lease_owner = $3 "
            "RETURNING attempt",
            run_id,
            self.namespace_id,
            worker_id,
            now,
            revision,
        )
        if row is None:
            return False
        await self.add_history(
            [
                {
                    "run_id": run_id,
                    "attempt": row["attempt"],
                    "from_status": rs.RUNNING,
                    "to_status": rs.QUEUED,
                    "reason": reason,
                    "created_at": now,
                }
            ]
        )
        return True

    async def get(self, run_id: str, *, lock: bool = False) -> Row | None:
        suffix = self.conn.for_update if lock else ""
        return await self.conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND namespace_id = $2{suffix}", run_id, self.namespace_id
        )

    async def find_by_reference(self, workflow: str, version: str, reference_id: str) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = $1 AND workflow_name = $2 AND version = $3 "
            "AND reference_id = $4",
            self.namespace_id,
            workflow,
            version,
            reference_id,
        )

    async def update(self, run_id: str, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(_update_sql(columns), run_id, self.namespace_id, *values.values())

    async def touch_if_held(self, run_id: str, revision: int, now: int, lease_until: int) -> str | None:
        """Extend the lease of a run still held at ``revision``.

        Returns its status: ``running``, or ``paused`` while a pause waits for the executor's next
        step boundary (held: its lease is extended too); None if the executor is fenced.
        """
        status: str | None = await self.conn.fetchval(
            "UPDATE runs SET updated_at = $4, wake_at = $5 "
            f"WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND {HELD} RETURNING status",
            run_id,
            self.namespace_id,
            revision,
            now,
            lease_until,
        )
        return status

    async def finish_held(
        self, run_id: str, revision: int, values: Mapping[str, Any], reason: str | None, now: int
    ) -> Row | None:
        """PostgreSQL: move a top-level run held at ``revision`` out of ``running`` in one statement.

        Sets ``values`` (``status`` among them) and appends the history row. Returns the run as
        updated, or None when nothing changed: the executor is fenced, or the run is a child. A
        child's ending must queue a waiting parent in the same transaction, and in one statement
        the parent would be read from a snapshot older than the child's row lock (a parent that
        began waiting meanwhile would be missed), so children take the general path.
        """
        columns = tuple(values)
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=6))
        status_at = 6 + columns.index("status")
        sql = (
            f"WITH u AS (UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2 AND revision = $3 "
            f"AND status = 'running' AND parent_run_id IS NULL RETURNING {RUN_COLUMNS}), "
            "h AS (INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
            f"SELECT $2, u.id, u.attempt, 'running', ${status_at}, $4::text, $5::bigint FROM u) "
            "SELECT * FROM u"
        )
        return await self.conn.fetchrow(sql, run_id, self.namespace_id, revision, reason, now, *values.values())

    async def finish_held_with_task(
        self,
        run_id: str,
        revision: int,
        values: Mapping[str, Any],
        reason: str | None,
        now: int,
        task: Mapping[str, Any],
    ) -> Row | None:
        """PostgreSQL: ``finish_held`` and the upsert of the run's last task record (``task``, the
        columns of ``StepRepository.upsert_task``) in one statement.

        The run moves only when the record can be written: when a finished entry already holds the
        task's address and seq, nothing changes and None is returned, so the caller takes the
        general path (record, then transition), which tells a retried write from a conflict. The
        row returned carries ``recorded``.
        """
        columns = tuple(values)
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=6))
        status_at = 6 + columns.index("status")
        t = 6 + len(columns)  # the task's parameters follow the run's
        sql = (
            f"WITH u AS (UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2 AND revision = $3 "
            "AND status = 'running' AND parent_run_id IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM tasks WHERE run_id = $1 AND address = ${t + 1}::varchar "
            f"AND seq = ${t + 2}::int AND status NOT IN ('discarded', 'awaiting_retry')) "
            f"RETURNING {RUN_COLUMNS}), "
            "h AS (INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
            f"SELECT $2, u.id, u.attempt, 'running', ${status_at}, $4::text, $5::bigint FROM u), "
            "ins AS (INSERT INTO tasks (id, namespace_id, run_id, address, seq, name, status, attempts, input, "
            "output, error, next_attempt_at, created_at, updated_at) "
            f"SELECT ${t}::varchar, $2, u.id, ${t + 1}::varchar, ${t + 2}::int, ${t + 3}::varchar, "
            f"${t + 4}::varchar, ${t + 5}::int, ${t + 6}::text, ${t + 7}::text, ${t + 8}::text, ${t + 9}::bigint, "
            "$5::bigint, $5::bigint FROM u "
            "ON CONFLICT (run_id, address, seq) WHERE status <> 'discarded' DO UPDATE SET "
            "status = excluded.status, attempts = excluded.attempts, output = excluded.output, "
            "error = excluded.error, next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at "
            "WHERE tasks.status = 'awaiting_retry' RETURNING id) "
            "SELECT u.*, (SELECT count(*) FROM ins) AS recorded FROM u"
        )
        return await self.conn.fetchrow(
            sql,
            run_id,
            self.namespace_id,
            revision,
            reason,
            now,
            *values.values(),
            task["id"],
            task["address"],
            task["seq"],
            task["name"],
            task["status"],
            task["attempts"],
            task["input"],
            task["output"],
            task["error"],
            task["next_attempt_at"],
        )

    async def sleep_held(
        self, run_id: str, revision: int, sleep: Mapping[str, Any], grace_ms: int | None, reason: str, now: int
    ) -> int | None:
        """PostgreSQL: a run held at ``revision`` starts sleep ``sleep`` (id, name, seq, wake_at) in
        one statement: the sleep row (an existing one of that name and seq keeps its deadline), the
        run ``sleeping`` until it, the history row. With ``grace_ms`` the sleep is held: the lease
        stays with the executor and the run wakes on its own only ``grace_ms`` after the sleep.

        Returns the sleep's end, or None when the executor is fenced.
        """
        return await self.conn.fetchval(  # type: ignore[no-any-return]
            _SLEEP_HELD,
            run_id,
            self.namespace_id,
            revision,
            sleep["id"],
            sleep["name"],
            sleep["seq"],
            sleep["wake_at"],
            now,
            grace_ms,
            reason,
        )

    async def resume_held_sleep(self, run_id: str, revision: int, lease_until: int, reason: str, now: int) -> bool:
        """PostgreSQL: a run sleeping at ``revision`` is ``running`` again, its sleep ``completed``,
        in one statement; False when the run moved on (cancelled, woken, recovered ...)."""
        found = await self.conn.fetchval(
            _RESUME_HELD_SLEEP, run_id, self.namespace_id, revision, now, lease_until, reason
        )
        return found is not None

    async def exists(self, run_id: str) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM runs WHERE id = $1 AND namespace_id = $2", run_id, self.namespace_id
        )
        return found is not None

    async def claim(
        self,
        versions: Sequence[tuple[str, str]],
        pools: Sequence[str],
        limit: int,
        worker_id: str,
        now: int,
        lease_until: int,
    ) -> tuple[list[Row], bool]:
        """Take up to ``limit`` queued runs, oldest first, lease them to ``worker_id``, write history.

        Returns the runs claimed, and whether the claim passed over claimable runs that another
        transaction held (PostgreSQL's ``SKIP LOCKED``; never on SQLite): that transaction may
        commit without changing them, and then nothing announces them again, so the caller must
        look again soon. On PostgreSQL each row also says ``has_events``.

        ``pools`` names the pools served; ``DEFAULT_POOL`` among them stands for runs stored with
        no pool. No pools at all means the default pool only.
        """
        p = Params(self.namespace_id, worker_id, now, lease_until)
        served = " OR ".join(f"(workflow_name = {p(w)} AND version = {p(v)})" for w, v in versions)
        named = [x for x in pools if x != DEFAULT_POOL]
        conditions = [self.conn.any_of(p, "pool", named)] if named else []
        if not pools or DEFAULT_POOL in pools:
            conditions.append("pool IS NULL")
        claimable = f"status = {QUEUED} AND ({served}) AND ({' OR '.join(conditions)})"
        pick = f"SELECT id FROM runs WHERE namespace_id = $1 AND {claimable} ORDER BY queued_at LIMIT {p(limit)}"
        return await self._claim(pick, claimable, p, limit, worker_id, now)

    async def _claim(
        self, pick: str, claimable: str, p: Params, limit: int, worker_id: str, now: int
    ) -> tuple[list[Row], bool]:
        """Claim the runs ``pick`` selects (its parameters in ``p``: $1 namespace, $2 worker, $3 now,
        $4 lease end), write their history; see :meth:`claim`. ``claimable`` is ``pick``'s condition."""
        raise NotImplementedError


# SET clause of a claim: $2 worker, $3 now, $4 lease end.
CLAIM_SETS = (
    f"SET status = {RUNNING}, revision = revision + 1, lease_owner = $2, wake_at = $4, "
    "queued_at = NULL, updated_at = $3, started_at = COALESCE(started_at, $3), "
    # The execution deadline runs from the first claim (NULL + n is NULL: no time limit).
    "deadline_at = COALESCE(deadline_at, $3 + timeout_ms) "
)
# What a claim returns of each run. wait_event/wait_seq: the wait the run last suspended on; its
# replay lasts until it (replay.py).
CLAIM_RETURNED = (
    "id",
    "revision",
    "workflow_name",
    "version",
    "attempt",
    "input",
    "retry",
    "reference_id",
    "wait_event",
    "wait_seq",
)


# $9 (grace) NULL: an ordinary sleep (lease released); a number: a held one (see sleep_held).
_SLEEP_HELD = """
WITH r AS (
  SELECT id, attempt FROM runs
  WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND status = 'running' FOR UPDATE
), s AS (
  INSERT INTO sleeps (id, namespace_id, run_id, name, seq, status, wake_at, created_at)
  SELECT $4::varchar, $2::varchar, r.id, $5::varchar, $6::int, 'sleeping', $7::bigint, $8::bigint FROM r
  ON CONFLICT (run_id, name, seq) DO NOTHING RETURNING wake_at
), w AS (
  SELECT coalesce(
    (SELECT wake_at FROM s),
    (SELECT wake_at FROM sleeps WHERE run_id = $1 AND namespace_id = $2 AND name = $5 AND seq = $6)
  ) AS wake_at
), u AS (
  UPDATE runs SET status = 'sleeping', updated_at = $8,
    wake_at = (SELECT wake_at FROM w) + coalesce($9::bigint, 0),
    lease_owner = CASE WHEN $9::bigint IS NULL THEN NULL ELSE runs.lease_owner END
  FROM r WHERE runs.id = r.id RETURNING runs.id, runs.attempt
), h AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT $2, u.id, u.attempt, 'running', 'sleeping', $10::text, $8 FROM u
)
SELECT (SELECT wake_at FROM w) FROM u
"""
_RESUME_HELD_SLEEP = """
WITH r AS (
  UPDATE runs SET status = 'running', updated_at = $4, wake_at = $5
  WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND status = 'sleeping' RETURNING id, attempt
), s AS (
  UPDATE sleeps SET status = 'completed' FROM r
  WHERE sleeps.run_id = r.id AND sleeps.namespace_id = $2 AND sleeps.status = 'sleeping'
), h AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT $2, r.id, r.attempt, 'sleeping', 'running', $6::text, $4 FROM r
)
SELECT id FROM r
"""
