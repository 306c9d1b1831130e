"""Statuses as SQL: literals and conditions built from the domain's state table
(``aiki.platform.domain.run_states``), never spelled in a statement by hand.

Also the rule every copy of "record a task" shares (:func:`record_task_once`).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiki.platform.domain import run_states as rs


def sql(status: str) -> str:
    """A run status as an SQL string literal (checked against the state table)."""
    if status not in rs.ALL_STATUSES:
        raise ValueError(f"{status!r} is not a run status")
    return f"'{status}'"


def sql_list(statuses: Iterable[str]) -> str:
    """Run statuses as the inside of an SQL ``IN (...)``, in a stable order."""
    return ", ".join(sql(s) for s in sorted(statuses))


SCHEDULED = sql(rs.SCHEDULED)
QUEUED = sql(rs.QUEUED)
RUNNING = sql(rs.RUNNING)
PAUSED = sql(rs.PAUSED)
SLEEPING = sql(rs.SLEEPING)
AWAITING_CHILD = sql(rs.AWAITING_CHILD)
STALLED = sql(rs.STALLED)

# A run its executor still holds at its revision: running, or paused while the pause waits for
# the executor's next step boundary (see services/lifecycle.py).
HELD = f"(status = {RUNNING} OR (status = {PAUSED} AND lease_owner IS NOT NULL))"
# The statuses a held run is in (the condition above, without the lease).
HELD_STATUSES = f"status IN ({RUNNING}, {PAUSED})"

# A task entry's statuses the recording rule names: a pending retry is overwritten by the next
# attempt; a discarded entry (an attempt of a run that was reset) no longer counts.
TASK_AWAITING_RETRY = "'awaiting_retry'"
TASK_DISCARDED = "'discarded'"

# A sleep entry's statuses: under way, then ended (or cancelled with its run).
SLEEP_SLEEPING = "'sleeping'"
SLEEP_COMPLETED = "'completed'"

TASK_COLUMNS = (
    "id, namespace_id, run_id, address, seq, name, status, attempts, input, output, error, "
    "next_attempt_at, created_at, updated_at"
)


def record_task_once(source: str) -> str:
    """``INSERT INTO tasks`` the row(s) ``source`` gives (``VALUES (...)`` or a ``SELECT``), once.

    A task result is recorded at most once per (run, address, seq); only a pending retry is
    overwritten by its next attempt. ``RETURNING id`` yields a row only when something was written.
    """
    return (
        f"INSERT INTO tasks ({TASK_COLUMNS}) {source} "
        f"ON CONFLICT (run_id, address, seq) WHERE status <> {TASK_DISCARDED} DO UPDATE SET "
        "status = excluded.status, attempts = excluded.attempts, output = excluded.output, error = excluded.error, "
        "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at "
        f"WHERE tasks.status = {TASK_AWAITING_RETRY} RETURNING id"
    )
