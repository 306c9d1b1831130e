"""The executor's writes on SQLite: short transactions (one writer at a time); no one-statement
shortcuts, so those methods send every write to the general path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiki.platform.db.claim_query import QUEUED, RETURNED, SETS, claim_history, claim_query
from aiki.platform.db.executor_store import (
    Claimed,
    Recorded,
    ReplayState,
    SharedExecutorStore,
    claimed_state,
    empty_state,
)
from aiki.platform.db.push_repo import DeliveryRepository
from aiki.platform.db.raw import Params, RawConn, Row
from aiki.platform.db.runs_repo import HELD, RunRepository
from aiki.platform.db.statuses import TASK_DISCARDED
from aiki.platform.db.steps_repo import StepRepository


class SqliteExecutorStore(SharedExecutorStore):
    """The executor's writes on SQLite (see the module docstring)."""

    async def record_task(
        self, run_id: str, revision: int, task: Mapping[str, Any], lease_until: int, extend_below: int
    ) -> Recorded:
        async with self.db.raw_transaction() as conn:
            # Fencing and a free lease extension in one statement; a run paused while the task ran
            # is still held: its result is recorded (pause never makes a side effect run twice).
            status: str | None = await conn.fetchval(
                "UPDATE runs SET updated_at = $4, wake_at = $5 "
                f"WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND {HELD} RETURNING status",
                run_id,
                self.namespace_id,
                revision,
                task["created_at"],
                lease_until,
            )
            if status is None:
                return Recorded(held=False, recorded=False, paused=False)
            recorded = await StepRepository(conn, self.namespace_id).upsert_task(run_id, task)
        return Recorded(held=True, recorded=recorded, paused=status == "paused")

    async def finish(
        self,
        run_id: str,
        revision: int,
        values: Mapping[str, Any],
        reason: str | None,
        now: int,
        task: Mapping[str, Any] | None = None,
    ) -> Row | None:
        return None

    async def sleep(
        self, run_id: str, revision: int, sleep: Mapping[str, Any], grace_ms: int | None, reason: str, now: int
    ) -> int | None:
        return None

    async def resume_held_sleep(self, run_id: str, revision: int, lease_until: int, reason: str, now: int) -> bool:
        return False

    async def claim(
        self,
        versions: Sequence[tuple[str, str]],
        pools: Sequence[str],
        limit: int,
        worker_id: str,
        now: int,
        lease_until: int,
    ) -> Claimed:
        async with self.db.raw_transaction() as conn:
            q = claim_query(conn, self.namespace_id, versions, pools, limit, worker_id, now, lease_until)
            # SQLite runs the uncorrelated subquery once; one writer at a time, so nothing to skip.
            claimed = await conn.fetch(
                f"UPDATE runs {SETS}WHERE id IN ({q.pick}) AND status = '{QUEUED}' RETURNING {', '.join(RETURNED)}",
                *q.params.values,
            )
            history = [claim_history(r, worker_id, now) for r in claimed]
            await RunRepository(conn, self.namespace_id).add_history(history)
            state = await claimed_state(claimed, lambda ids, first: _state_for(conn, ids, first))
        return Claimed(claimed, False, state)

    async def delivered(
        self, run_id: str, revision: int, worker_id: str, reason: str, now: int, attempt: Mapping[str, Any]
    ) -> tuple[bool, bool]:
        async with self.db.raw_transaction() as conn:
            written = await DeliveryRepository(conn, self.namespace_id).insert_delivery(attempt)
            released = await RunRepository(conn, self.namespace_id).release(worker_id, {run_id: revision}, reason, now)
        return written, bool(released)

    async def replay_state(self, run_ids: Sequence[str]) -> ReplayState:
        async with self.db.autocommit() as conn:
            return await _state_for(conn, list(run_ids), list(run_ids))


_STATE_QUERIES = {
    "tasks": "SELECT run_id, address, seq, name, status, attempts, output, error, next_attempt_at "
    f"FROM tasks WHERE {{ids}} AND status <> {TASK_DISCARDED} ORDER BY created_at, id",
    "events": "SELECT run_id, id, name, seq, data, reference_id FROM events WHERE {ids} ORDER BY name, seq",
    "sleeps": "SELECT run_id, name, seq, status, wake_at FROM sleeps WHERE {ids} ORDER BY name, seq",
    "wait_timeouts": "SELECT run_id, name, seq FROM wait_timeouts WHERE {ids}",
    "children": "SELECT parent_run_id AS run_id, id, parent_address, parent_seq, workflow_name, version, "
    "status, output, error FROM runs WHERE {ids} ORDER BY id",
}


async def _state_for(conn: RawConn, run_ids: list[str], executed: list[str]) -> ReplayState:
    state = empty_state(run_ids)
    for kind, template in _STATE_QUERIES.items():
        ids = run_ids if kind == "events" else executed
        if not ids:
            continue
        p = Params()
        column = "parent_run_id" if kind == "children" else "run_id"
        for row in await conn.fetch(template.format(ids=conn.any_of(p, column, ids)), *p.values):
            state[row["run_id"]][kind].append(row)
    return state
