"""Push delivery's rules as tables (``aiki.platform.domain.push``), and the delivery body."""

from __future__ import annotations

import msgspec
import pytest

from aiki.api import wire
from aiki.platform.domain import push
from aiki.platform.domain import values as v
from aiki.platform.domain.push import HALF_OPEN, OPEN, Breaker, BreakerPolicy
from aiki.platform.services.delivery_body import encode_delivery
from aiki.worker_sdk import protocol as p

POLICY = BreakerPolicy(threshold=3, cooldown_ms=1_000, cooldown_max_ms=5_000, probe_window_ms=40_000)
NOW = 1_000_000


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        # closed: failures count up to the threshold, then it opens for one cooldown
        (Breaker(), "failure", Breaker(failures=1)),
        (Breaker(failures=1), "failure", Breaker(failures=2)),
        (Breaker(failures=2), "failure", Breaker(OPEN, NOW + 1_000, opens=1, failures=3)),
        (Breaker(failures=2), "success", Breaker()),
        (Breaker(), "probe", Breaker()),
        # open: waits out its cooldown; a straggler failure changes nothing but the count
        (Breaker(OPEN, NOW + 10, 1, 3), "probe", Breaker(OPEN, NOW + 10, 1, 3)),
        (Breaker(OPEN, NOW + 10, 1, 3), "failure", Breaker(OPEN, NOW + 10, 1, 4)),
        (Breaker(OPEN, NOW, 1, 3), "probe", Breaker(HALF_OPEN, NOW + 40_000, 1, 3)),
        (Breaker(OPEN, NOW - 1, 1, 3), "probe", Breaker(HALF_OPEN, NOW + 40_000, 1, 3)),
        (Breaker(OPEN, NOW + 10, 1, 3), "success", Breaker()),
        # half-open: the probe decides; a failure reopens with a doubled cooldown, capped
        (Breaker(HALF_OPEN, NOW + 10, 1, 3), "success", Breaker()),
        (Breaker(HALF_OPEN, NOW + 10, 1, 3), "failure", Breaker(OPEN, NOW + 2_000, 2, 4)),
        (Breaker(HALF_OPEN, NOW + 10, 2, 4), "failure", Breaker(OPEN, NOW + 4_000, 3, 5)),
        (Breaker(HALF_OPEN, NOW + 10, 3, 5), "failure", Breaker(OPEN, NOW + 5_000, 4, 6)),
        (Breaker(HALF_OPEN, NOW + 10, 30, 5), "failure", Breaker(OPEN, NOW + 5_000, 31, 6)),
        # half-open: a probe lost (its window over) may be taken again; one under way may not
        (Breaker(HALF_OPEN, NOW + 10, 1, 3), "probe", Breaker(HALF_OPEN, NOW + 10, 1, 3)),
        (Breaker(HALF_OPEN, NOW - 10, 1, 3), "probe", Breaker(HALF_OPEN, NOW + 40_000, 1, 3)),
    ],
)
def test_breaker_transitions(before: Breaker, event: push.BreakerEvent, after: Breaker) -> None:
    assert push.breaker_after(before, event, NOW, POLICY) == after


@pytest.mark.parametrize(
    ("breaker", "expected"),
    [
        (Breaker(), "claim"),
        (Breaker(failures=2), "claim"),
        (Breaker(OPEN, NOW + 1, 1, 3), "wait"),
        (Breaker(OPEN, NOW, 1, 3), "probe"),
        (Breaker(OPEN, None, 1, 3), "probe"),
        (Breaker(HALF_OPEN, NOW + 1, 1, 3), "wait"),
        (Breaker(HALF_OPEN, NOW - 1, 1, 3), "probe"),
    ],
)
def test_admission(breaker: Breaker, expected: str) -> None:
    assert push.admission(breaker, NOW) == expected


def test_a_breaker_opening_again_and_again_waits_ever_longer_up_to_the_maximum() -> None:
    b = Breaker()
    now = NOW
    cooldowns = []
    for _ in range(POLICY.threshold):
        b = push.breaker_after(b, "failure", now, POLICY)
    for _ in range(5):
        assert b.state == OPEN
        assert b.until is not None
        cooldowns.append(b.until - now)
        now = b.until
        b = push.breaker_after(b, "probe", now, POLICY)
        assert b.state == HALF_OPEN
        b = push.breaker_after(b, "failure", now, POLICY)
    assert cooldowns == [1_000, 2_000, 4_000, 5_000, 5_000]
    assert push.breaker_after(b, "success", now, POLICY) == Breaker()


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 50),  # nominal 100: jittered into [50, 100]
        (1, 0.999999, 100),
        (2, 0.0, 100),  # nominal 200
        (2, 0.5, 150),
        (3, 0.0, 200),  # nominal 400
        (4, 0.0, 400),  # nominal 800
        (5, 0.0, 500),  # capped at 1000
        (5, 0.999999, 1_000),
        (60, 0.0, 500),  # no overflow far out
        (0, 0.0, 50),  # an attempt below 1 counts as the first
    ],
)
def test_retry_delay_is_exponential_jittered_and_capped(attempt: int, rand: float, expected: int) -> None:
    assert push.retry_delay_ms(attempt, 100, 1_000, lambda: rand) == expected


def test_retry_delay_with_no_base_is_no_wait() -> None:
    assert push.retry_delay_ms(3, 0, 1_000, lambda: 0.5) == 0


@pytest.mark.parametrize(
    ("timeout_ms", "limit_ms"),
    [(30_000, 27_000), (100_000, 95_000), (1_000, 900), (500, 400), (50, 1)],
)
def test_the_endpoint_is_given_its_timeout_less_a_margin(timeout_ms: int, limit_ms: int) -> None:
    assert push.time_limit_ms(timeout_ms) == limit_ms


@pytest.mark.parametrize(
    ("previous", "until", "expected"),
    [
        (None, None, ["new"]),
        ("old", NOW + 1, ["new", "old"]),
        ("old", NOW, ["new"]),
        ("old", None, ["new"]),
    ],
)
def test_signing_secrets_carry_the_previous_one_during_its_grace(
    previous: str | None, until: int | None, expected: list[str]
) -> None:
    assert push.signing_secrets("new", previous, until, NOW) == expected


def test_a_target_never_shows_its_secrets() -> None:
    target = push.Target(
        id="e",
        namespace_id="n",
        url="https://x",
        versions=(("wf", "1"),),
        pools=(),
        concurrency=1,
        timeout_ms=1_000,
        secret="whsec_current",
        previous_secret="whsec_previous",
        previous_secret_expires_at=NOW + 1,
        updated_at=NOW,
    )
    assert "whsec" not in repr(target)
    assert target.worker_id == "endpoint:e"
    assert target.secrets(NOW) == ["whsec_current", "whsec_previous"]


def test_error_texts_are_truncated() -> None:
    assert push.truncate_error(None) is None
    assert push.truncate_error("short") == "short"
    long = push.truncate_error("x" * 10_000)
    assert long is not None
    assert len(long) == push.ERROR_MAX_CHARS


def test_the_delivery_body_carries_the_activation_as_the_api_maps_it() -> None:
    failure = v.Failure(type="ValueError", message="bad", code="E1")
    a = v.Activation(
        run_id="r1",
        revision=3,
        workflow="wf",
        version="1",
        attempt=2,
        input='{"x": 1}',
        lease_ttl_ms=30_000,
        tasks=[
            v.TaskEntry("step:a", 0, "a", "completed", 1, '"out"', None, None),
            v.TaskEntry("step:b", 0, "b", "awaiting_retry", 1, None, failure, NOW),
        ],
        events=[v.EventEntry("ev1", "paid", 0, '{"amount": 5}', "ref")],
        sleeps=[v.SleepEntry("nap", 0, "completed", NOW)],
        wait_timeouts=[v.WaitTimeoutEntry("paid", 1)],
        retry='{"kind": "fixed", "max_attempts": 3}',
        reference_id="ref-1",
        children=[v.ChildEntry("child:c", 0, "r2", "kid", "1", "failed", None, failure)],
        deadline_at=NOW + 5,
        resumed_wait=v.WaitRef("paid", 0),
    )
    body = encode_delivery("ep1", 2, 9_000, a)
    decoded = msgspec.json.decode(body, type=p.Delivery)
    head = (decoded.type, decoded.endpoint_id, decoded.attempt, decoded.time_limit_ms)
    assert head == ("activation", "ep1", 2, 9_000)
    expected = msgspec.json.decode(msgspec.json.encode(wire.activation(a)), type=p.Activation)
    assert msgspec.json.encode(decoded.activation) == msgspec.json.encode(expected)
    assert msgspec.json.decode(body)["activation"]["input"] == {"x": 1}


def test_the_delivery_carries_the_server_s_request_limits_as_a_registration_does() -> None:
    from aiki.api.worker_routes import batch_max_bytes
    from aiki.platform.db.engine import Database
    from aiki.platform.domain.settings import Settings
    from aiki.platform.services.context import Services

    svc = Services(Database("sqlite+aiosqlite:///:memory:", migrate=False), Settings(max_payload_bytes=4096))
    a = v.Activation("r", 1, "wf", "1", 1, "null", 1_000, [], [], [], [], None, None, [], None, None)
    decoded = msgspec.json.decode(encode_delivery("e", 1, 900, a, 4096), type=p.Delivery)
    assert (decoded.payload_max_bytes, decoded.batch_max_bytes) == (4096, batch_max_bytes(svc))
    bare = msgspec.json.decode(encode_delivery("e", 1, 900, a), type=p.Delivery)
    assert (bare.payload_max_bytes, bare.batch_max_bytes) == (None, None)
