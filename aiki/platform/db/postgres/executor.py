"""The executor's writes on PostgreSQL: each hot write is one statement (one round trip, its own
transaction), a CTE that fences, writes and appends history together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.claim_query import CLAIMED, QUEUED, RETURNED, SETS, ClaimQuery, claim_query
from aiki.platform.db.executor_store import (
    Claimed,
    Recorded,
    ReplayState,
    SharedExecutorStore,
    claimed_state,
    empty_state,
)
from aiki.platform.db.push_repo import ATTEMPT_COLUMNS
from aiki.platform.db.raw import RawConn, Row
from aiki.platform.db.runs_repo import HELD, RUN_COLUMNS
from aiki.platform.db.statuses import (
    PAUSED,
    RUNNING,
    SLEEP_COMPLETED,
    SLEEP_SLEEPING,
    SLEEPING,
    TASK_AWAITING_RETRY,
    TASK_DISCARDED,
    record_task_once,
)
from aiki.platform.db.statuses import QUEUED as QUEUED_STATUS

_TASK_COLUMNS = ("id", "address", "seq", "name", "status", "attempts", "input", "output", "error", "next_attempt_at")

# Fencing, the lease extension and the upsert in ONE statement. The fence locks the run's row
# first, as the two-step version does, and the task row is written only when the fence held. The
# lease is extended only once less than half of it is left ($16): rewriting the run row on every
# task would add a row version (and an entry in each of the table's indexes, ``wake_at`` being
# indexed) per task. Parameters are cast because an INSERT ... SELECT does not infer their types
# from the target columns. A task result is recorded at most once per (run, address, seq); only a
# pending retry is overwritten by its next attempt.
_TASK_RECORD_FENCED = (
    "WITH fence AS (SELECT id, wake_at, status FROM runs "
    f"WHERE id = $3 AND namespace_id = $2 AND revision = $14 AND {HELD} FOR NO KEY UPDATE), "
    "ext AS (UPDATE runs SET updated_at = $13, wake_at = $15 FROM fence "
    "WHERE runs.id = fence.id "
    "AND (fence.wake_at IS NULL OR fence.wake_at < $16::bigint)), "
    "ins AS ("
    + record_task_once(
        "SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::int, $6::varchar, $7::varchar, $8::int, "
        "$9::text, $10::text, $11::text, $12::bigint, $13::bigint, $13::bigint FROM fence"
    )
    + ") "
    "SELECT (SELECT count(*) FROM fence) AS held, (SELECT count(*) FROM ins) AS recorded, "
    f"(SELECT count(*) FROM fence WHERE status = {PAUSED}) AS paused"
)

# $9 (grace) NULL: an ordinary sleep (lease released); a number: a held one (see ``sleep``).
_SLEEP_HELD = f"""
WITH r AS (
  SELECT id, attempt FROM runs
  WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND status = {RUNNING} FOR UPDATE
), s AS (
  INSERT INTO sleeps (id, namespace_id, run_id, name, seq, status, wake_at, created_at)
  SELECT $4::varchar, $2::varchar, r.id, $5::varchar, $6::int, {SLEEP_SLEEPING}, $7::bigint, $8::bigint FROM r
  ON CONFLICT (run_id, name, seq) DO NOTHING RETURNING wake_at
), w AS (
  SELECT coalesce(
    (SELECT wake_at FROM s),
    (SELECT wake_at FROM sleeps WHERE run_id = $1 AND namespace_id = $2 AND name = $5 AND seq = $6)
  ) AS wake_at
), u AS (
  UPDATE runs SET status = {SLEEPING}, updated_at = $8,
    wake_at = (SELECT wake_at FROM w) + coalesce($9::bigint, 0),
    lease_owner = CASE WHEN $9::bigint IS NULL THEN NULL ELSE runs.lease_owner END
  FROM r WHERE runs.id = r.id RETURNING runs.id, runs.attempt
), h AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT $2, u.id, u.attempt, {RUNNING}, {SLEEPING}, $10::text, $8 FROM u
)
SELECT (SELECT wake_at FROM w) FROM u
"""
_RESUME_HELD_SLEEP = f"""
WITH r AS (
  UPDATE runs SET status = {RUNNING}, updated_at = $4, wake_at = $5
  WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND status = {SLEEPING} RETURNING id, attempt
), s AS (
  UPDATE sleeps SET status = {SLEEP_COMPLETED} FROM r
  WHERE sleeps.run_id = r.id AND sleeps.namespace_id = $2 AND sleeps.status = {SLEEP_SLEEPING}
), h AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT $2, r.id, r.attempt, {SLEEPING}, {RUNNING}, $6::text, $4 FROM r
)
SELECT id FROM r
"""


def _finish_sql(columns: tuple[str, ...], with_task: bool) -> str:
    """The run moves out of ``running`` with its history row (and its last task record first).

    Children take the general path: a child's ending must queue a waiting parent in the same
    transaction, and in one statement the parent would be read from a snapshot older than the
    child's row lock (a parent that began waiting meanwhile would be missed). With a task, the run
    moves only when the record can be written: when a finished entry already holds its address and
    seq, nothing changes, so the general path tells a retried write from a conflict.
    """
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=6))
    status_at = 6 + columns.index("status")
    t = 6 + len(columns)  # the task's parameters follow the run's
    unrecorded = (
        f"AND NOT EXISTS (SELECT 1 FROM tasks WHERE run_id = $1 AND address = ${t + 1}::varchar "
        f"AND seq = ${t + 2}::int AND status NOT IN ({TASK_DISCARDED}, {TASK_AWAITING_RETRY})) "
        if with_task
        else ""
    )
    sql = (
        f"WITH u AS (UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2 AND revision = $3 "
        f"AND status = {RUNNING} AND parent_run_id IS NULL {unrecorded}RETURNING {RUN_COLUMNS}), "
        "h AS (INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
        f"SELECT $2, u.id, u.attempt, {RUNNING}, ${status_at}, $4::text, $5::bigint FROM u)"
    )
    if not with_task:
        return sql + " SELECT * FROM u"
    return sql + (
        ", ins AS ("
        + record_task_once(
            f"SELECT ${t}::varchar, $2, u.id, ${t + 1}::varchar, ${t + 2}::int, ${t + 3}::varchar, "
            f"${t + 4}::varchar, ${t + 5}::int, ${t + 6}::text, ${t + 7}::text, ${t + 8}::text, ${t + 9}::bigint, "
            "$5::bigint, $5::bigint FROM u"
        )
        + ") SELECT u.*, (SELECT count(*) FROM ins) AS recorded FROM u"
    )


class PostgresExecutorStore(SharedExecutorStore):
    """The executor's writes on PostgreSQL (see the module docstring)."""

    announces_status_changes = True  # a trigger NOTIFYs every status change

    async def record_task(
        self, run_id: str, revision: int, task: Mapping[str, Any], lease_until: int, extend_below: int
    ) -> Recorded:
        async with self.db.autocommit() as conn:
            row = await conn.fetchrow(
                _TASK_RECORD_FENCED,
                task["id"],
                self.namespace_id,
                run_id,
                *(task[c] for c in _TASK_COLUMNS[1:]),
                task["created_at"],
                revision,
                lease_until,
                extend_below,
            )
        assert row is not None
        return Recorded(row["held"] == 1, row["recorded"] == 1, row["paused"] == 1)

    async def finish(
        self,
        run_id: str,
        revision: int,
        values: Mapping[str, Any],
        reason: str | None,
        now: int,
        task: Mapping[str, Any] | None = None,
    ) -> Row | None:
        sql = _finish_sql(tuple(values), task is not None)
        args = [run_id, self.namespace_id, revision, reason, now, *values.values()]
        if task is not None:
            args += [task[c] for c in _TASK_COLUMNS]
        async with self.db.autocommit() as conn:
            return await conn.fetchrow(sql, *args)

    async def sleep(
        self, run_id: str, revision: int, sleep: Mapping[str, Any], grace_ms: int | None, reason: str, now: int
    ) -> int | None:
        async with self.db.autocommit() as conn:
            return await conn.fetchval(  # type: ignore[no-any-return]
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
        async with self.db.autocommit() as conn:
            found = await conn.fetchval(
                _RESUME_HELD_SLEEP, run_id, self.namespace_id, revision, now, lease_until, reason
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
    ) -> Claimed:
        # The claim (with its history rows) is one statement and commits on its own; the replay
        # state is read right after on the same connection. Nothing but the executor holding the
        # new revision writes tasks, sleeps or children, so reading after the commit loses nothing.
        async with self.db.autocommit() as conn:
            q = claim_query(conn, self.namespace_id, versions, pools, limit, worker_id, now, lease_until)
            rows = await conn.fetch(_claim_sql(q), *q.params.values)
            claimed = [r for r in rows if r["id"] is not None]
            # With fewer rows picked than the limit, runs left queued were held by another transaction.
            skipped = len(claimed) < limit and bool(rows[0]["skipped"])
            state = await claimed_state(claimed, lambda ids, first: _state_for(conn, ids, first))
        return Claimed(claimed, skipped, state)

    async def delivered(
        self, run_id: str, revision: int, worker_id: str, reason: str, now: int, attempt: Mapping[str, Any]
    ) -> tuple[bool, bool]:
        async with self.db.autocommit() as conn:
            row = await conn.fetchrow(
                _DELIVERED,
                run_id,
                self.namespace_id,
                revision,
                worker_id,
                now,
                reason,
                *(attempt[c] for c in ATTEMPT_COLUMNS),
            )
        assert row is not None
        return row["written"] == 1, row["released"] == 1

    async def replay_state(self, run_ids: Sequence[str]) -> ReplayState:
        async with self.db.autocommit() as conn:
            return await _state_for(conn, list(run_ids), list(run_ids))


# The answer of a push delivery in one statement: the attempt row (while its endpoint exists) and,
# when the endpoint left the run held at the revision delivered, its release (as
# ``LeaseQueries.release``: queued again, or a pausing run stays paused, the revision moves on).
# $1 run, $2 namespace, $3 revision, $4 lease owner, $5 now, $6 reason, then the attempt's columns.
_DELIVERED = f"""
WITH rel AS (
  UPDATE runs SET status = CASE WHEN status = {RUNNING} THEN {QUEUED_STATUS} ELSE status END,
    revision = revision + 1, lease_owner = NULL, wake_at = NULL,
    queued_at = CASE WHEN status = {RUNNING} THEN $5 ELSE queued_at END, updated_at = $5
  WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND lease_owner = $4 AND status IN ({RUNNING}, {PAUSED})
  RETURNING attempt, status
), h AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT $2, $1, attempt, CASE WHEN status = {QUEUED_STATUS} THEN {RUNNING} ELSE {PAUSED} END, status, $6::text, $5
  FROM rel
), d AS (
  INSERT INTO endpoint_deliveries (namespace_id, {", ".join(ATTEMPT_COLUMNS)})
  SELECT $2, $7::varchar, $8::varchar, $9::int, $10::int, $11::varchar, $12::int, $13::int, $14::text, $15::bigint
  WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = $7 AND namespace_id = $2)
  RETURNING id
)
SELECT (SELECT count(*) FROM d) AS written, (SELECT count(*) FROM rel) AS released
"""


def _claim_sql(q: ClaimQuery) -> str:
    """The claim and its history rows in one statement (one round trip, its own transaction).

    The rows are picked once, in a materialized CTE: as ``id IN (SELECT ... LIMIT n FOR UPDATE SKIP
    LOCKED)`` PostgreSQL may plan a semi-join that re-runs the subquery, each time skipping the
    rows it locked before and taking others, far beyond the limit. ``skipped``: runs this claim
    could take were left queued (statement snapshot: the rows picked are still queued in it, hence
    excluded by id). ``has_events``: events wait for the run (sent before this claim); most first
    claims have none, and then the activation needs no further read. One row even when nothing
    was claimed.
    """
    returning = "RETURNING " + ", ".join(f"runs.{c}" for c in RETURNED)
    return (
        f"WITH picked AS MATERIALIZED ({q.pick} FOR UPDATE SKIP LOCKED), "
        f"c AS (UPDATE runs {SETS}FROM picked WHERE runs.id = picked.id AND runs.status = '{QUEUED}' {returning}), "
        "h AS (INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
        f"SELECT $1, c.id, c.attempt, '{QUEUED}', '{CLAIMED}', 'claimed by ' || $2, $3 FROM c), "
        f"s AS (SELECT EXISTS (SELECT 1 FROM runs WHERE {q.served} AND id NOT IN (SELECT id FROM picked)) AS skipped) "
        "SELECT c.*, EXISTS (SELECT 1 FROM events e WHERE e.run_id = c.id) AS has_events, s.skipped "
        "FROM s LEFT JOIN c ON true"
    )


_STATE_KINDS = ("tasks", "events", "sleeps", "wait_timeouts", "children")
# The five reads of a replay state as one UNION ALL over a common column list (NULL where a kind
# has no such column), ordered per kind as SQLite's separate queries are. $1: every run id
# (events); $2: the runs executed before (everything else).
_STATE_IN_ONE_STATEMENT = f"""
SELECT * FROM (
  SELECT 0 AS kind, run_id, address, seq, name, status, attempts, output, error, next_attempt_at,
         id, NULL AS data, NULL AS reference_id, NULL::bigint AS wake_at, NULL AS parent_address,
         NULL::integer AS parent_seq, NULL AS workflow_name, NULL AS version,
         NULL AS o_text, created_at AS o_num, id AS o_tie
    FROM tasks WHERE run_id = ANY($2) AND status <> {TASK_DISCARDED}
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


async def _state_for(conn: RawConn, run_ids: list[str], executed: list[str]) -> ReplayState:
    # One round trip instead of five: a resumed run's claim is on the path of every wake-up.
    state = empty_state(run_ids)
    for row in await conn.fetch(_STATE_IN_ONE_STATEMENT, run_ids, executed):
        state[row["run_id"]][_STATE_KINDS[row["kind"]]].append(row)
    return state
