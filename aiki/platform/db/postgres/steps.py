"""PostgreSQL's step statements: a run's replay state read in one round trip."""

from __future__ import annotations

from aiki.platform.db.raw import Row
from aiki.platform.db.statuses import TASK_DISCARDED
from aiki.platform.db.steps_repo import STATE_KINDS, StepRepository

# The five reads of ``state_for`` as one UNION ALL over a common column list (NULL
# where a kind has no such column), ordered per kind as the separate queries are. $1: every run
# id (events); $2: the runs executed before (everything else).
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


class PgStepRepository(StepRepository):
    """Task entries, events, sleeps and wait timeouts, on PostgreSQL."""

    async def _load_state(
        self, state: dict[str, dict[str, list[Row]]], run_ids: list[str], executed: list[str]
    ) -> None:
        # One round trip instead of five: a resumed run's claim is on the path of every wake-up.
        for row in await self.conn.fetch(_STATE_IN_ONE_STATEMENT, run_ids, executed):
            state[row["run_id"]][STATE_KINDS[row["kind"]]].append(row)
