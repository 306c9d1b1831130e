"""The run state machine, as a table: every (action, status) pair is either allowed or refused."""

from __future__ import annotations

import pytest

from aiki.platform.domain.errors import ActionNotAllowed, InvalidTransition
from aiki.platform.domain.run_states import (
    ALL_STATUSES,
    LIVE,
    TERMINAL,
    TIMED,
    TRANSITIONS,
    USER_ACTIONS,
    check_action,
    is_terminal,
    next_status,
)

# Written out by hand from docs/internals.md rather than derived from TRANSITIONS, so a change to
# the machine has to change this table too. "" is "no run yet".
EXPECTED: dict[str, dict[str, str]] = {
    "start": {"": "queued"},
    "start_delayed": {"": "scheduled"},
    "claim": {"queued": "running"},
    "complete": {"running": "completed"},
    "fail": {"running": "failed"},
    "retry": {"running": "awaiting_retry"},
    "await_task_retry": {"running": "awaiting_retry"},
    "sleep": {"running": "sleeping"},
    "resume_sleep": {"sleeping": "running"},
    "await_event": {"running": "awaiting_event"},
    "await_child": {"running": "awaiting_child"},
    "due": {
        "scheduled": "queued",
        "sleeping": "queued",
        "awaiting_event": "queued",
        "awaiting_retry": "queued",
        "awaiting_child": "queued",
    },
    # A pausing run (paused, still leased) whose executor is lost: released, still paused.
    "lease_expired": {"running": "queued", "paused": "paused"},
    "recovery_exhausted": {"running": "failed", "paused": "failed"},
    "timeout": {
        "scheduled": "failed",
        "queued": "failed",
        "running": "failed",
        "paused": "failed",
        "sleeping": "failed",
        "awaiting_event": "failed",
        "awaiting_retry": "failed",
        "awaiting_child": "failed",
        "stalled": "failed",
    },
    "stall": {"queued": "stalled"},
    "event_arrived": {"awaiting_event": "queued"},
    "child_ended": {"awaiting_child": "queued"},
    "cancel": {
        "scheduled": "cancelled",
        "queued": "cancelled",
        "running": "cancelled",
        "paused": "cancelled",
        "sleeping": "cancelled",
        "awaiting_event": "cancelled",
        "awaiting_retry": "cancelled",
        "awaiting_child": "cancelled",
        "stalled": "cancelled",
    },
    "pause": {"scheduled": "paused", "queued": "paused", "running": "paused"},
    "yield": {"paused": "paused"},
    "resume": {"paused": "queued"},
    "resume_delayed": {"paused": "scheduled"},
    "resume_pausing": {"paused": "running"},
    "wake": {"sleeping": "queued"},
    "requeue": {"stalled": "queued"},
}

EXPECTED_LIVE = {
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
EXPECTED_TERMINAL = {"completed", "failed", "cancelled"}

STATUSES = sorted(EXPECTED_LIVE | EXPECTED_TERMINAL)
PAIRS = [(action, status) for action in sorted(EXPECTED) for status in STATUSES]


def test_status_sets() -> None:
    assert set(LIVE) == EXPECTED_LIVE
    assert set(TERMINAL) == EXPECTED_TERMINAL
    assert not LIVE & TERMINAL
    assert ALL_STATUSES == LIVE | TERMINAL
    assert TIMED <= LIVE


def test_the_table_covers_every_action() -> None:
    assert set(TRANSITIONS) == set(EXPECTED)
    assert TRANSITIONS == EXPECTED


def test_every_target_is_a_known_status() -> None:
    for action, allowed in TRANSITIONS.items():
        for source, target in allowed.items():
            assert target in ALL_STATUSES, (action, source, target)
            assert source == "" or source in ALL_STATUSES, (action, source)


@pytest.mark.parametrize(("action", "status"), PAIRS)
def test_action_from_status(action: str, status: str) -> None:
    expected = EXPECTED[action].get(status)
    if expected is not None:
        assert next_status(action, status) == expected
        return
    with pytest.raises(InvalidTransition) as info:
        next_status(action, status)
    message = str(info.value)
    assert action.replace("_", " ") in message or action in message, message
    assert status in message, message
    assert info.value.code == "invalid_transition"
    assert info.value.message == message


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_action_on_a_new_run(action: str) -> None:
    """Only the start actions apply before a run exists (status None or "")."""
    expected = EXPECTED[action].get("")
    for current in (None, ""):
        if expected is not None:
            assert next_status(action, current) == expected
        else:
            with pytest.raises(InvalidTransition) as info:
                next_status(action, current)
            message = str(info.value)
            assert action.replace("_", " ") in message or action in message, message


@pytest.mark.parametrize("status", sorted(EXPECTED_TERMINAL))
def test_terminal_statuses_accept_no_action(status: str) -> None:
    assert is_terminal(status)
    for action in TRANSITIONS:
        with pytest.raises(InvalidTransition):
            next_status(action, status)


@pytest.mark.parametrize("status", sorted(EXPECTED_LIVE))
def test_cancel_is_allowed_from_every_live_status(status: str) -> None:
    assert not is_terminal(status)
    assert next_status("cancel", status) == "cancelled"


def test_no_action_leaves_a_terminal_status() -> None:
    for allowed in TRANSITIONS.values():
        assert not set(allowed) & TERMINAL


def test_unknown_action_names_the_action() -> None:
    with pytest.raises(InvalidTransition, match="teleport"):
        next_status("teleport", "running")


def test_refusal_lists_the_valid_sources() -> None:
    with pytest.raises(InvalidTransition) as info:
        next_status("claim", "sleeping")
    assert "queued" in str(info.value)


# The user actions and the statuses each is valid from (resume: back to queued or scheduled).
USER_VALID_FROM = {
    "cancel": EXPECTED_LIVE,
    "pause": {"scheduled", "queued", "running"},
    "resume": {"paused"},
    "wake": {"sleeping"},
    "requeue": {"stalled"},
}


def test_user_actions() -> None:
    assert set(USER_ACTIONS) == set(USER_VALID_FROM)


@pytest.mark.parametrize(("action", "status"), [(a, s) for a in sorted(USER_VALID_FROM) for s in STATUSES])
def test_user_action_from_status(action: str, status: str) -> None:
    if status in USER_VALID_FROM[action]:
        check_action(action, "run-1", status)
        return
    with pytest.raises(ActionNotAllowed) as info:
        check_action(action, "run-1", status)
    error = info.value
    assert isinstance(error, InvalidTransition)
    assert error.code == "action_not_allowed"
    assert (error.action, error.status, error.run_id) == (action, status, "run-1")
    assert set(error.valid_from) == USER_VALID_FROM[action]
    assert f"cannot {action} run 'run-1': it is {status}" in error.message


def test_child_waits_and_deadlines_are_timed() -> None:
    assert "awaiting_child" in TIMED
    assert "paused" not in TIMED
    assert "stalled" not in TIMED
