from __future__ import annotations

from datetime import timedelta

import pytest

from aiki.worker_sdk import RetryPolicy, TaskFailedError
from aiki.worker_sdk.protocol import ErrorInfo, RetryPolicyWire

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("policy", "attempt", "delay"),
    [
        (RetryPolicy.never(), 1, timedelta(0)),
        (RetryPolicy.fixed(3, 5 * S), 1, 5 * S),
        (RetryPolicy.fixed(3, 5 * S), 2, 5 * S),
        (RetryPolicy.exponential(5, S), 1, S),
        (RetryPolicy.exponential(5, S), 2, 2 * S),
        (RetryPolicy.exponential(5, S), 4, 8 * S),
        (RetryPolicy.exponential(5, S, factor=3.0), 3, 9 * S),
        (RetryPolicy.exponential(10, S, max_delay=10 * S), 8, 10 * S),
        (RetryPolicy.exponential(10**6, S, max_delay=S), 10**5, S),
    ],
)
def test_delay_table(policy: RetryPolicy, attempt: int, delay: timedelta) -> None:
    assert policy.delay_for(attempt) == delay


def test_jittered_stays_within_half_to_full() -> None:
    policy = RetryPolicy.jittered(5, 4 * S, max_delay=10 * S)
    for _ in range(100):
        assert 2 * S <= policy.delay_for(1) <= 4 * S
        assert 5 * S <= policy.delay_for(3) <= 10 * S


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "expected"),
    [(1, 1, False), (3, 1, True), (3, 2, True), (3, 3, False), (3, 4, False)],
)
def test_max_attempts_counts_all_attempts(max_attempts: int, attempt: int, expected: bool) -> None:
    assert RetryPolicy.fixed(max_attempts, S).should_retry(attempt, RuntimeError()) is expected


class Declined(Exception):
    pass


def test_non_retryable_by_type_and_name() -> None:
    by_type = RetryPolicy.fixed(3, S, non_retryable=(ValueError,))
    assert not by_type.should_retry(1, ValueError())
    assert not by_type.should_retry(1, UnicodeError())  # a subclass
    assert by_type.should_retry(1, KeyError())
    by_name = RetryPolicy.fixed(3, S, non_retryable=("Declined",))
    assert not by_name.should_retry(1, Declined())
    qualified = RetryPolicy.fixed(3, S, non_retryable=(f"{__name__}.Declined",))
    assert not qualified.should_retry(1, Declined())
    task_error = TaskFailedError("pay", ErrorInfo(type="Declined", message="no"))
    assert not by_name.should_retry(1, task_error)
    assert not RetryPolicy.fixed(3, S, non_retryable=(TaskFailedError,)).should_retry(1, task_error)


def test_wire_round_trip() -> None:
    policy = RetryPolicy.exponential(4, 2 * S, 3.0, 60 * S, non_retryable=(ValueError, "Declined"))
    wire = policy.to_wire()
    assert wire == RetryPolicyWire(
        kind="exponential",
        max_attempts=4,
        base_ms=2000,
        factor=3.0,
        max_delay_ms=60000,
        non_retryable=["ValueError", "Declined"],
    )
    back = RetryPolicy.from_wire(wire)
    assert back.delay_for(2) == policy.delay_for(2)
    assert back.non_retryable == ("ValueError", "Declined")
    assert not back.should_retry(1, ValueError())
    assert RetryPolicy.from_wire(RetryPolicyWire()) == RetryPolicy.never()


def test_invalid_policy() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy.fixed(0, S)
