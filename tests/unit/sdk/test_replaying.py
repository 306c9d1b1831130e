"""When a replay ends (``ReplayState.replaying``, which silences ``run.logger``): once the code has
reached the last recorded step and the wait the run last suspended on (issue 10, defect 5)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from aiki.worker_sdk._replay_state import ReplayState
from aiki.worker_sdk.protocol import Activation, EventRecord, SleepRecord, TaskRecord, WaitRef, WaitTimeoutRecord
from aiki.worker_sdk.run import Run

NULL = msgspec.Raw(b"null")


def activation(**fields: Any) -> Activation:
    fields.setdefault("revision", 2)
    return Activation(run_id="r1", workflow="w", version="1", attempt=1, input=NULL, lease_ttl_ms=1000, **fields)


def task(address: str, status: str = "completed") -> TaskRecord:
    return TaskRecord(address=address, seq=0, name=address, status=status, attempts=1, output=NULL)  # type: ignore[arg-type]


def test_a_first_execution_is_not_a_replay() -> None:
    assert not ReplayState(activation(revision=1)).replaying
    # Events buffered before the first claim are not history the code reached.
    events = [EventRecord(id="e1", name="go", seq=0, data=NULL)]
    assert not ReplayState(activation(revision=1, events=events)).replaying


def test_the_replay_ends_at_the_last_recorded_step_an_execution_stopped_at() -> None:
    state = ReplayState(activation(tasks=[task("a")], sleeps=[SleepRecord("s", 0, "completed", 0)]))
    assert state.replaying
    state.next_task("a")
    assert state.replaying
    state.next_sleep("s")
    assert not state.replaying


def test_after_a_step_an_execution_went_on_from_the_replay_ends_at_the_next_step() -> None:
    state = ReplayState(activation(tasks=[task("a")]))
    state.next_task("a")
    assert state.replaying  # the code between it and the next step ran before
    state.next_wait("go")
    assert not state.replaying


def test_the_replay_lasts_until_the_wait_the_run_resumes() -> None:
    events = [EventRecord(id="e1", name="go", seq=0, data=NULL)]
    state = ReplayState(
        activation(
            tasks=[task("a")],
            sleeps=[SleepRecord("s", 0, "completed", 0)],
            events=events,
            resumed_wait=WaitRef("go", 0),
        )
    )
    state.next_task("a")
    state.next_sleep("s")
    assert state.replaying  # the previous execution went on to the wait
    state.next_wait("go")
    assert not state.replaying


def test_a_resumed_wait_alone_makes_a_replay_and_a_timed_out_wait_ends_it() -> None:
    state = ReplayState(activation(wait_timeouts=[WaitTimeoutRecord("go", 0)], resumed_wait=WaitRef("go", 0)))
    assert state.replaying
    state.next_wait("go")
    assert not state.replaying


def test_new_work_always_ends_the_replay() -> None:
    state = ReplayState(activation(tasks=[task("a")], resumed_wait=WaitRef("never", 3)))
    state.next_task("a")
    state.next_task("b")
    assert not state.replaying


class _Execution:
    def __init__(self, act: Activation) -> None:
        self.activation = act
        self.state = ReplayState(act)


def test_run_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiki.workflow")
    execution = _Execution(activation(tasks=[task("a")], sleeps=[SleepRecord("s", 0, "completed", 0)]))
    run = Run(execution, {})  # type: ignore[arg-type]
    run.logger.info("before")
    assert run.replaying
    assert not run.logger.isEnabledFor(logging.INFO)
    execution.state.next_task("a")
    execution.state.next_sleep("s")
    run.logger.info("after")
    assert [r.getMessage() for r in caplog.records] == ["after"]
    assert caplog.records[0].run_id == "r1"  # type: ignore[attr-defined]
