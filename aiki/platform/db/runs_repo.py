"""SQL for runs and their history. Tenancy is fixed when a repository is built.

Driver-level SQL (see ``raw.py``): these statements run on every step of every run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Row

RUN_COLUMNS = (
    "id, namespace_id, workflow_name, version, status, revision, attempt, recoveries, max_recoveries, "
    "input, input_hash, output, error, reference_id, parent_run_id, pool, retry, wake_at, lease_owner, "
    "wait_event, wait_seq, created_at, updated_at, finished_at, parent_address, parent_seq, timeout_ms, "
    "deadline_at, resume_at"
)

# A run its executor still holds at its revision: running, or paused while the pause waits for
# the executor's next step boundary (see services/lifecycle.py).
HELD = "(status = 'running' OR (status = 'paused' AND lease_owner IS NOT NULL))"

CHILD_COLUMNS = "id, parent_run_id, parent_address, parent_seq, workflow_name, version, status, output, error"

_HISTORY_INSERT = (
    "INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


@functools.lru_cache(maxsize=256)
def _insert_sql(columns: tuple[str, ...]) -> str:
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    return f"INSERT INTO runs (namespace_id, {', '.join(columns)}) VALUES ($1, {placeholders})"


@functools.lru_cache(maxsize=256)
def _insert_started_sql(columns: tuple[str, ...]) -> str:
    # PostgreSQL: the run and its first history row in one statement (one round trip).
    index = {c: i for i, c in enumerate(columns, start=2)}
    return (
        f"WITH r AS ({_insert_sql(columns)} RETURNING id) "
        "INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
        f"SELECT $1, r.id, ${index['attempt']}, NULL, ${index['status']}, NULL, ${index['created_at']} FROM r"
    )


@functools.lru_cache(maxsize=256)
def _insert_claimed_sql(columns: tuple[str, ...]) -> str:
    # PostgreSQL: a run inserted as claimed, and the history of both steps, in one statement.
    index = {c: i for i, c in enumerate(columns, start=2)}
    reason = len(columns) + 2
    attempt, created = f"${index['attempt']}::int", f"${index['created_at']}::bigint"
    return (
        f"WITH r AS ({_insert_sql(columns)} RETURNING id) "
        "INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at) "
        f"SELECT $1, r.id, {attempt}, NULL, 'queued', NULL, {created} FROM r UNION ALL "
        f"SELECT $1, r.id, {attempt}, 'queued', 'running', ${reason}::text, {created} FROM r"
    )


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return f"UPDATE runs SET {sets} WHERE id = $1 AND namespace_id = $2"


class RunRepository:
    """Runs of one namespace."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def insert(self, values: Mapping[str, Any]) -> None:
        columns = tuple(values)
        await self.conn.execute(_insert_sql(columns), self.namespace_id, *values.values())

    async def insert_started(self, values: Mapping[str, Any]) -> None:
        """Insert a new run and its first history row (``None`` → its status, at ``created_at``)."""
        if self.conn.is_postgres:
            await self.conn.execute(_insert_started_sql(tuple(values)), self.namespace_id, *values.values())
            return
        await self.insert(values)
        await self.add_history(
            [
                {
                    "run_id": values["id"],
                    "attempt": values["attempt"],
                    "from_status": None,
                    "to_status": values["status"],
                    "created_at": values["created_at"],
                }
            ]
        )

    async def insert_claimed(self, values: Mapping[str, Any], reason: str) -> None:
        """Insert a new run already claimed (``values`` say by whom) and the history of both
        steps: ``None`` → ``queued``, then ``queued`` → ``running`` for ``reason``."""
        if self.conn.is_postgres:
            await self.conn.execute(_insert_claimed_sql(tuple(values)), self.namespace_id, *values.values(), reason)
            return
        await self.insert(values)
        base = {"run_id": values["id"], "attempt": values["attempt"], "created_at": values["created_at"]}
        await self.add_history(
            [
                {**base, "from_status": None, "to_status": "queued"},
                {**base, "from_status": "queued", "to_status": "running", "reason": reason},
            ]
        )

    async def requeue_unstarted(self, run_id: str, worker_id: str, reason: str, now: int, *, revision: int = 1) -> bool:
        """A run claimed by ``worker_id`` at ``revision`` that never reached it goes back to the
        queue, as if never claimed: no recovery is used, and a first claim's start time and
        execution deadline are undone (the revision still moves on, fencing any write from that
        claim). False when the run moved on meanwhile."""
        row = await self.conn.fetchrow(
            "UPDATE runs SET status = 'queued', revision = revision + 1, lease_owner = NULL, wake_at = NULL, "
            "queued_at = $4, updated_at = $4, "
            "started_at = CASE WHEN revision = 1 THEN NULL ELSE started_at END, "
            "deadline_at = CASE WHEN revision = 1 THEN NULL ELSE deadline_at END "
            "WHERE id = $1 AND namespace_id = $2 AND status = 'running' AND revision = $5 AND lease_owner = $3 "
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
                    "from_status": "running",
                    "to_status": "queued",
                    "reason": reason,
                    "created_at": now,
                }
            ]
        )
        return True

    async def get(self, run_id: str, *, lock: bool = False) -> Row | None:
        suffix = " FOR UPDATE" if lock and self.conn.is_postgres else ""
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

    async def held_states(self, run_ids: Sequence[str]) -> list[Row]:
        """``id, revision, status, lease_owner`` of these runs (those that exist)."""
        p = Params(self.namespace_id)
        ids = self.conn.any_of(p, "id", list(run_ids))
        return await self.conn.fetch(
            f"SELECT id, revision, status, lease_owner FROM runs WHERE namespace_id = $1 AND {ids}", *p.values
        )

    async def exists(self, run_id: str) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM runs WHERE id = $1 AND namespace_id = $2", run_id, self.namespace_id
        )
        return found is not None

    async def heartbeat(
        self, worker_id: str, held: Mapping[str, int], now: int, lease_until: int
    ) -> tuple[list[str], list[str]]:
        """Extend the leases ``worker_id`` still holds.

        Returns the ids whose revision moved on (stale), and those a pause is requested of
        (``paused`` but still held by ``worker_id``: alive, its lease extended too).
        """
        if not held:
            return [], []
        rows = await self.held_states(list(held))
        mine = [r for r in rows if r["revision"] == held[r["id"]] and r["lease_owner"] == worker_id]
        pausing = [r["id"] for r in mine if r["status"] == "paused"]
        alive = [r["id"] for r in mine if r["status"] == "running"] + pausing
        if alive:
            p = Params(self.namespace_id, now, lease_until, worker_id)
            held_by_me = (
                f"namespace_id = $1 AND status IN ('running', 'paused') AND lease_owner = $4 "
                f"AND {self.conn.any_of(p, 'id', alive)}"
            )
            if self.conn.is_postgres:
                # A row locked by a slow transaction (a task being recorded, a cancel) is skipped rather
                # than waited for: waiting would stall the extension of every other lease this worker
                # holds until theirs expire too. The skipped run gets its extension on the next beat.
                # The rows are picked once (a materialized CTE), never by a subquery re-run per row.
                await self.conn.execute(
                    f"WITH picked AS MATERIALIZED (SELECT id FROM runs WHERE {held_by_me} FOR UPDATE SKIP LOCKED) "
                    "UPDATE runs SET wake_at = $3, updated_at = $2 FROM picked WHERE runs.id = picked.id",
                    *p.values,
                )
            else:
                await self.conn.execute(f"UPDATE runs SET wake_at = $3, updated_at = $2 WHERE {held_by_me}", *p.values)
        kept = set(alive) | set(pausing)
        return [run_id for run_id in held if run_id not in kept], pausing

    # -- run trees -----------------------------------------------------------------------------

    async def find_child(self, parent_id: str, address: str, seq: int) -> Row | None:
        return await self.conn.fetchrow(
            f"SELECT {CHILD_COLUMNS} FROM runs WHERE parent_run_id = $1 AND parent_address = $2 AND parent_seq = $3 "
            "AND namespace_id = $4",
            parent_id,
            address,
            seq,
            self.namespace_id,
        )

    async def children_of(self, parent_ids: Sequence[str], *, lock: bool = False) -> list[Row]:
        """Every child run of ``parent_ids`` (any status), locked for update when asked."""
        p = Params(self.namespace_id)
        suffix = " ORDER BY id FOR UPDATE" if lock and self.conn.is_postgres else " ORDER BY id"
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = $1 AND "
            f"{self.conn.any_of(p, 'parent_run_id', list(parent_ids))}{suffix}",
            *p.values,
        )

    async def wake_parent(self, parent_id: str, wait_key: str, now: int) -> Row | None:
        """Queue ``parent_id`` if it is suspended on ``wait_key``; return its attempt if it was.

        ``wait_event``/``wait_seq`` stay: the next activation names the wait it resumes.
        """
        return await self.conn.fetchrow(
            "UPDATE runs SET status = 'queued', queued_at = $3, wake_at = NULL, "
            "updated_at = $3 WHERE id = $1 AND namespace_id = $2 AND status = 'awaiting_child' AND wait_event = $4 "
            "RETURNING attempt",
            parent_id,
            self.namespace_id,
            now,
            wait_key,
        )

    async def add_history(self, entries: Sequence[Mapping[str, Any]]) -> None:
        rows = [
            (
                self.namespace_id,
                e["run_id"],
                e["attempt"],
                e["from_status"],
                e["to_status"],
                e.get("reason"),
                e["created_at"],
            )
            for e in entries
        ]
        if len(rows) == 1:
            await self.conn.execute(_HISTORY_INSERT, *rows[0])
        else:
            await self.conn.executemany(_HISTORY_INSERT, rows)

    async def history(self, run_id: str) -> list[Row]:
        return await self.conn.fetch(
            "SELECT id, attempt, from_status, to_status, reason, created_at FROM run_history "
            "WHERE namespace_id = $1 AND run_id = $2 ORDER BY id",
            self.namespace_id,
            run_id,
        )

    async def release(self, worker_id: str, held: Mapping[str, int], reason: str, now: int) -> list[str]:
        """Put the runs ``worker_id`` holds, each at its revision in ``held``, back in the queue.

        The revision moves on (fencing any late write of the old execution); no recovery is counted,
        the lease was not lost but given back. A pausing run (paused, still held) is released and
        stays paused, as at its step boundary. Returns the ids released; a run that moved on (ended,
        suspended, cancelled, recovered by another worker) is left alone.
        """
        released: list[str] = []
        for run_id, revision in held.items():
            row = await self.conn.fetchrow(
                "UPDATE runs SET status = CASE WHEN status = 'running' THEN 'queued' ELSE status END, "
                "revision = revision + 1, lease_owner = NULL, wake_at = NULL, "
                "queued_at = CASE WHEN status = 'running' THEN $5 ELSE queued_at END, updated_at = $5 "
                "WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND lease_owner = $4 "
                "AND status IN ('running', 'paused') "
                "RETURNING attempt, status",
                run_id,
                self.namespace_id,
                revision,
                worker_id,
                now,
            )
            if row is None:
                continue
            released.append(run_id)
            await self.add_history(
                [
                    {
                        "run_id": run_id,
                        "attempt": row["attempt"],
                        "from_status": "running" if row["status"] == "queued" else "paused",
                        "to_status": row["status"],
                        "reason": reason,
                        "created_at": now,
                    }
                ]
            )
        return released


_END_DUE_SLEEPS = """
WITH due AS MATERIALIZED (
  SELECT id FROM runs WHERE wake_at IS NOT NULL AND wake_at <= $1 AND status = 'sleeping'
  ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED
), woken AS (
  UPDATE runs AS r SET status = $3, wake_at = NULL, queued_at = $1, updated_at = $1
  FROM due WHERE r.id = due.id
  RETURNING r.id, r.namespace_id, r.attempt
), slept AS (
  UPDATE sleeps AS s SET status = 'completed' FROM woken
  WHERE s.run_id = woken.id AND s.namespace_id = woken.namespace_id AND s.status = 'sleeping' AND s.wake_at <= $1
), logged AS (
  INSERT INTO run_history (namespace_id, run_id, attempt, from_status, to_status, reason, created_at)
  SELECT namespace_id, id, attempt, 'sleeping', $3, 'sleep ended', $1 FROM woken
)
SELECT id, namespace_id FROM woken
"""


# When the PostgreSQL server (re)started, in ms since the epoch.
_PG_UP_SINCE_MS = "(extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint"


class DueRunRepository:
    """The timer loop's view: due deadlines across every namespace.

    Deliberately unscoped: it belongs to the server runtime, which serves all tenants, and it only
    hands each run to a namespace-scoped :class:`RunRepository` to act on.
    """

    def __init__(self, conn: RawConn) -> None:
        self.conn = conn

    async def end_due_sleeps(self, now: int, limit: int, target: str) -> list[Row]:
        """PostgreSQL: move up to ``limit`` runs whose sleep is over to ``target`` in one statement.

        Status, the sleep entry and the history row change together (one statement is atomic);
        rows another replica holds are skipped. Returns the runs moved (``id``, ``namespace_id``).
        """
        assert self.conn.is_postgres
        return await self.conn.fetch(_END_DUE_SLEEPS, now, limit, target)

    async def take_due(self, now: int, limit: int, *, leases_from: int = 0, lease_ttl_ms: int = 0) -> list[Row]:
        """Runs whose ``wake_at`` passed (locked; skipped if another replica holds them).

        A running run's ``wake_at`` is its lease's expiry. Leases expire only from ``leases_from``
        on and, on PostgreSQL, once the database server has been up for ``lease_ttl_ms``: a worker
        cannot heartbeat while the database is down, so its lease is not held against it.
        """
        lock = " FOR UPDATE SKIP LOCKED" if self.conn.is_postgres else ""
        args: list[Any] = [now, limit, leases_from]
        leases = "$1 >= $3"
        if self.conn.is_postgres:
            leases += f" AND $1 >= {_PG_UP_SINCE_MS} + $4"
            args.append(lease_ttl_ms)
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE wake_at IS NOT NULL AND wake_at <= $1 "
            f"AND (status <> 'running' OR ({leases})) ORDER BY wake_at LIMIT $2{lock}",
            *args,
        )

    async def take_expired(self, now: int, limit: int) -> list[Row]:
        """Runs whose execution deadline passed (locked; skipped if another replica holds them)."""
        lock = " FOR UPDATE SKIP LOCKED" if self.conn.is_postgres else ""
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE deadline_at IS NOT NULL AND deadline_at <= $1 "
            f"ORDER BY deadline_at LIMIT $2{lock}",
            now,
            limit,
        )

    async def next_wake_at(self, *, leases_from: int = 0, lease_ttl_ms: int = 0) -> int | None:
        """The earliest deadline; a lease expiry counts from when :meth:`take_due` would act on it."""
        args: list[Any] = [leases_from]
        if self.conn.is_postgres:
            hold = f"GREATEST(min(wake_at), $1::bigint, {_PG_UP_SINCE_MS} + $2::bigint)"
            args.append(lease_ttl_ms)
        else:
            hold = "max(min(wake_at), $1)"
        value = await self.conn.fetchval(
            "SELECT min(t) FROM ("
            "SELECT min(wake_at) AS t FROM runs WHERE wake_at IS NOT NULL AND status <> 'running' "
            f"UNION ALL SELECT CASE WHEN min(wake_at) IS NULL THEN NULL ELSE {hold} END AS t "
            "FROM runs WHERE wake_at IS NOT NULL AND status = 'running' "
            "UNION ALL SELECT min(deadline_at) AS t FROM runs WHERE deadline_at IS NOT NULL) AS deadlines",
            *args,
        )
        return int(value) if value is not None else None

    async def stall(self, queued_before: int, now: int, limit: int) -> list[Row]:
        """Move runs queued since before ``queued_before`` to ``stalled``; return them.

        The conditional update (and SKIP LOCKED on PostgreSQL) lets replicas sweep concurrently:
        a run is stalled once, and never one a worker is claiming at that moment.
        """
        pick = "SELECT id FROM runs WHERE status = 'queued' AND queued_at < $1 ORDER BY queued_at LIMIT $3"
        if not self.conn.is_postgres:
            return await self.conn.fetch(
                "UPDATE runs SET status = 'stalled', queued_at = NULL, updated_at = $2 "
                f"WHERE id IN ({pick}) AND status = 'queued' RETURNING id, namespace_id, attempt",
                queued_before,
                now,
                limit,
            )
        # Picked once, in a materialized CTE: as ``id IN (SELECT ... LIMIT n SKIP LOCKED)`` the
        # subquery may be re-run per row and go beyond the limit (see ``RunRepository.claim``).
        return await self.conn.fetch(
            f"WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) "
            "UPDATE runs SET status = 'stalled', queued_at = NULL, updated_at = $2 FROM picked "
            "WHERE runs.id = picked.id AND runs.status = 'queued' "
            "RETURNING runs.id, runs.namespace_id, runs.attempt",
            queued_before,
            now,
            limit,
        )
