"""The run state machine: which action may move a run from which status, and where to.

Transitions are data: ``TRANSITIONS[action]`` maps each status the action is allowed from to the
status it leads to. Services consult :func:`next_status` before every write, so an action from a
status it does not apply to is refused the same way everywhere.
"""

from __future__ import annotations

from typing import Final

from aiki.platform.domain.errors import ActionNotAllowed, InvalidTransition

# The statuses by name (SQL builds its conditions from these: ``aiki.platform.db.statuses``).
SCHEDULED: Final = "scheduled"
QUEUED: Final = "queued"
RUNNING: Final = "running"
PAUSED: Final = "paused"
SLEEPING: Final = "sleeping"
AWAITING_EVENT: Final = "awaiting_event"
AWAITING_RETRY: Final = "awaiting_retry"
AWAITING_CHILD: Final = "awaiting_child"
STALLED: Final = "stalled"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

LIVE: Final = frozenset(
    {
        "scheduled",
        "queued",
        "running",
        "paused",
        "sleeping",
        "awaiting_event",
        "awaiting_retry",
        "awaiting_child",
        "stalled",
    }
)
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
ALL_STATUSES: Final = LIVE | TERMINAL

# Statuses whose `wake_at` the timer loop watches.
TIMED: Final = frozenset({"scheduled", "running", "sleeping", "awaiting_event", "awaiting_retry", "awaiting_child"})

_SUSPENDED = frozenset({"sleeping", "awaiting_event", "awaiting_retry", "awaiting_child"})

TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    # A new run is queued at once, or scheduled when it has a delay.
    "start": {"": "queued"},
    "start_delayed": {"": "scheduled"},
    "claim": {"queued": "running"},
    # The executor ends or suspends its execution.
    "complete": {"running": "completed"},
    "fail": {"running": "failed"},
    "retry": {"running": "awaiting_retry"},
    "await_task_retry": {"running": "awaiting_retry"},
    "sleep": {"running": "sleeping"},
    # The executor that held its short sleep in memory carries on (no claim, no replay).
    "resume_sleep": {"sleeping": "running"},
    "await_event": {"running": "awaiting_event"},
    "await_child": {"running": "awaiting_child"},
    # The timer loop.
    "due": {
        "scheduled": "queued",
        "sleeping": "queued",
        "awaiting_event": "queued",
        "awaiting_retry": "queued",
        "awaiting_child": "queued",
    },
    # A pausing run (paused, still leased) whose executor is lost is released and stays paused.
    "lease_expired": {"running": "queued", "paused": "paused"},
    "recovery_exhausted": {"running": "failed", "paused": "failed"},
    # The version's execution deadline passed (wall-clock from the first claim).
    "timeout": {status: "failed" for status in LIVE},
    # The stall sweep: queued for longer than `stall_after` without a claim.
    "stall": {"queued": "stalled"},
    # External signals.
    "event_arrived": {"awaiting_event": "queued"},
    "child_ended": {"awaiting_child": "queued"},
    # A person or a program acting on the run.
    "cancel": {status: "cancelled" for status in LIVE},
    # Pausing a running run is a request: the run is `paused` at once but stays leased to its
    # executor until it stops at its next step boundary (`yield`), so the task under way finishes
    # and is recorded. Resumed before that, the executor simply goes on (`resume_pausing`).
    "pause": {"scheduled": "paused", "queued": "paused", "running": "paused"},
    "yield": {"paused": "paused"},
    # Resume goes back to `queued`, or to `scheduled` while a delayed start is still in the future.
    "resume": {"paused": "queued"},
    "resume_delayed": {"paused": "scheduled"},
    "resume_pausing": {"paused": "running"},
    "wake": {"sleeping": "queued"},
    "requeue": {"stalled": "queued"},
}

# The actions a person (or a program through the API) takes on a run.
USER_ACTIONS: Final = frozenset({"cancel", "pause", "resume", "wake", "requeue"})


def next_status(action: str, current: str | None) -> str:
    """The status ``action`` leads to from ``current``; raise :class:`InvalidTransition` if none."""
    allowed = TRANSITIONS.get(action)
    if allowed is None:
        raise InvalidTransition(f"unknown action {action!r}")
    target = allowed.get(current or "")
    if target is None:
        valid = ", ".join(sorted(s for s in allowed if s)) or "none"
        raise InvalidTransition(f"cannot {action.replace('_', ' ')} a run that is {current} (valid from: {valid})")
    return target


def check_action(action: str, run_id: str, current: str) -> None:
    """Raise :class:`ActionNotAllowed` (naming the action and ``current``) unless a user ``action`` applies."""
    valid = set(TRANSITIONS[action])
    if action == "resume":
        valid |= set(TRANSITIONS["resume_delayed"])
    if current not in valid:
        raise ActionNotAllowed(action, run_id, current, sorted(valid))


def is_terminal(status: str) -> bool:
    return status in TERMINAL
