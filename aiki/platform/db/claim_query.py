"""The parts of a claim both stores share: which runs it picks and what it sets on them.

A claim takes up to ``limit`` queued runs, oldest first, of the versions and pools served, and
leases them to a worker. ``pools`` names the pools served; ``DEFAULT_POOL`` among them stands for
runs stored with no pool. No pools at all means the default pool only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiki.platform.db.raw import Params, RawConn, Row
from aiki.platform.domain.queries import DEFAULT_POOL
from aiki.platform.domain.run_states import next_status

QUEUED = "queued"
CLAIMED = next_status("claim", QUEUED)

# wait_event/wait_seq: the wait the run last suspended on; its replay lasts until it (replay.py).
RETURNED = (
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
    "deadline_at",
)
"""The columns of each run claimed."""

SETS = (
    f"SET status = '{CLAIMED}', revision = revision + 1, lease_owner = $2, wake_at = $4, "
    "queued_at = NULL, updated_at = $3, started_at = COALESCE(started_at, $3), "
    # The execution deadline runs from the first claim (NULL + n is NULL: no time limit).
    "deadline_at = COALESCE(deadline_at, $3 + timeout_ms) "
)
"""What a claim sets ($2 the worker, $3 now, $4 the lease's end)."""


@dataclass(frozen=True)
class ClaimQuery:
    """The parameters ($1 namespace, $2 worker, $3 now, $4 lease's end, then the versions, pools
    and limit) and the conditions of one claim."""

    params: Params
    served: str
    """The runs of the versions and pools served (a condition on ``runs``)."""
    pick: str
    """``SELECT id`` of the runs to claim, oldest first, at most ``limit``."""


def claim_query(
    conn: RawConn,
    namespace_id: str,
    versions: Sequence[tuple[str, str]],
    pools: Sequence[str],
    limit: int,
    worker_id: str,
    now: int,
    lease_until: int,
) -> ClaimQuery:
    p = Params(namespace_id, worker_id, now, lease_until)
    versions_served = " OR ".join(f"(workflow_name = {p(w)} AND version = {p(v)})" for w, v in versions)
    named = [x for x in pools if x != DEFAULT_POOL]
    conditions = [conn.any_of(p, "pool", named)] if named else []
    if not pools or DEFAULT_POOL in pools:
        conditions.append("pool IS NULL")
    served = f"namespace_id = $1 AND status = '{QUEUED}' AND ({versions_served}) AND ({' OR '.join(conditions)})"
    pick = f"SELECT id FROM runs WHERE {served} ORDER BY queued_at LIMIT {p(limit)}"
    return ClaimQuery(p, served, pick)


def claim_history(row: Row, worker_id: str, now: int) -> dict[str, Any]:
    """The history row of a run claimed by ``worker_id``."""
    return {
        "run_id": row["id"],
        "attempt": row["attempt"],
        "from_status": QUEUED,
        "to_status": CLAIMED,
        "reason": f"claimed by {worker_id}",
        "created_at": now,
    }
