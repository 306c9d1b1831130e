"""SQLite's step statements: a run's replay state read kind by kind."""

from __future__ import annotations

from aiki.platform.db.raw import Params, Row
from aiki.platform.db.statuses import TASK_DISCARDED
from aiki.platform.db.steps_repo import StepRepository

_STATE_QUERIES = {
    "tasks": "SELECT run_id, address, seq, name, status, attempts, output, error, next_attempt_at "
    f"FROM tasks WHERE {{ids}} AND status <> {TASK_DISCARDED} ORDER BY created_at, id",
    "events": "SELECT run_id, id, name, seq, data, reference_id FROM events WHERE {ids} ORDER BY name, seq",
    "sleeps": "SELECT run_id, name, seq, status, wake_at FROM sleeps WHERE {ids} ORDER BY name, seq",
    "wait_timeouts": "SELECT run_id, name, seq FROM wait_timeouts WHERE {ids}",
    "children": "SELECT parent_run_id AS run_id, id, parent_address, parent_seq, workflow_name, version, "
    "status, output, error FROM runs WHERE {ids} ORDER BY id",
}


class SqliteStepRepository(StepRepository):
    """Task entries, events, sleeps and wait timeouts, on SQLite."""

    async def _load_state(
        self, state: dict[str, dict[str, list[Row]]], run_ids: list[str], executed: list[str]
    ) -> None:
        for kind, template in _STATE_QUERIES.items():
            ids = run_ids if kind == "events" else executed
            if not ids:
                continue
            p = Params()
            column = "parent_run_id" if kind == "children" else "run_id"
            sql = template.format(ids=self.conn.any_of(p, column, ids))
            for row in await self.conn.fetch(sql, *p.values):
                state[row["run_id"]][kind].append(row)
