"""Push delivery's rules, sans-IO: the retry backoff, the circuit breaker, what a deliverer holds.

The server runtime delivers each ready run of an endpoint's versions as a signed POST
(``aiki.platform.runtime.push_loop``, ``aiki.platform.services.deliveries``). What it decides
is here, as plain functions of their inputs (the time and a random source are arguments), so the
rules are tested as tables (``tests/unit/test_push_domain.py``):

- a failed delivery is tried again after :func:`retry_delay_ms` (exponential, jittered, capped);
- the breaker of an endpoint (shared by every server replica: it lives in the ``endpoints`` row)
  moves by :func:`breaker_after` on ``success``, ``failure`` and ``probe``, and :func:`admission`
  says whether a deliverer may claim now (``claim``), may claim one probe (``probe``) or must wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

BreakerEvent = Literal["success", "failure", "probe"]
Admission = Literal["claim", "probe", "wait"]

# The outcomes of a delivery that got no valid answer (beside the answers' own: completed, ...).
HTTP_ERROR = "http_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
BAD_ANSWER = "bad_answer"
REFUSED = "refused"
FAILURES = frozenset({HTTP_ERROR, TIMEOUT, CONNECTION_ERROR, BAD_ANSWER, REFUSED})

ERROR_MAX_CHARS = 500
"""The longest error text kept on an attempt row or an endpoint."""

WORKER_PREFIX = "endpoint:"
"""Runs claimed for an endpoint are leased to ``endpoint:<endpoint id>``."""


def lease_owner(endpoint_id: str) -> str:
    """The lease owner (worker id) of the runs delivered to an endpoint."""
    return WORKER_PREFIX + endpoint_id


@dataclass(frozen=True, slots=True)
class Breaker:
    """An endpoint's circuit breaker, as its row keeps it."""

    state: str = CLOSED
    until: int | None = None
    """``open``: when one probe may be claimed. ``half_open``: when the probe is deemed lost (another
    replica may probe)."""
    opens: int = 0
    """How many times it opened in a row without closing: the cooldown doubles each time."""
    failures: int = 0
    """Consecutive failed deliveries."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int
    cooldown_ms: int
    cooldown_max_ms: int
    probe_window_ms: int
    """How long a half-open probe may take before another one is tried."""


def cooldown_ms(opens: int, policy: BreakerPolicy) -> int:
    """How long the breaker stays open the ``opens``-th time in a row (from 1): doubling, capped."""
    if opens <= 1:
        return min(policy.cooldown_ms, policy.cooldown_max_ms)
    exponent = min(opens - 1, 40)
    return int(min(policy.cooldown_ms * (2**exponent), policy.cooldown_max_ms))


def breaker_after(b: Breaker, event: BreakerEvent, now: int, policy: BreakerPolicy) -> Breaker:
    """The breaker after ``event`` at ``now``.

    - ``success`` closes it from any state (the endpoint answered well).
    - ``failure`` counts; closed, it opens at ``threshold`` consecutive failures; half-open (the
      probe failed) it opens again with a doubled cooldown; open, it stays open as it is.
    - ``probe`` (a deliverer takes the one probe of an open breaker whose cooldown is over, or of a
      half-open one whose probe was lost) makes it half-open until ``now + probe_window_ms``;
      otherwise it changes nothing.
    """
    if event == "success":
        return Breaker()
    if event == "probe":
        if admission(b, now) != "probe":
            return b
        return replace(b, state=HALF_OPEN, until=now + policy.probe_window_ms)
    failures = b.failures + 1
    if b.state == HALF_OPEN or (b.state == CLOSED and failures >= policy.threshold):
        opens = b.opens + 1
        return Breaker(state=OPEN, until=now + cooldown_ms(opens, policy), opens=opens, failures=failures)
    return replace(b, failures=failures)


def admission(b: Breaker, now: int) -> Admission:
    """Whether a deliverer may claim at ``now``: freely (closed), one probe (an open breaker whose
    cooldown is over, a half-open one whose probe was lost), or not at all."""
    if b.state == CLOSED:
        return "claim"
    if b.until is None or now >= b.until:
        return "probe"
    return "wait"


def retry_delay_ms(attempt: int, base_ms: int, max_ms: int, random: Callable[[], float]) -> int:
    """How long to wait after the ``attempt``-th failed delivery (from 1) before the next.

    ``base * 2**(attempt-1)``, at most ``max_ms``, jittered into its upper half (``random()`` in
    [0, 1)): retries of many runs spread out, and each wait is at least half the nominal one.
    """
    exponent = min(max(attempt, 1) - 1, 40)
    nominal = min(base_ms * (2**exponent), max_ms)
    return math.ceil(nominal / 2 + random() * nominal / 2) if nominal > 0 else 0


def time_limit_ms(timeout_ms: int) -> int:
    """The time limit an endpoint is given: its timeout less a margin for the answer to travel
    (a tenth of it, between 100 ms and 5 s)."""
    margin = min(max(timeout_ms // 10, 100), 5_000)
    return max(1, timeout_ms - margin)


def truncate_error(text: str | None) -> str | None:
    """An error text as kept: at most :data:`ERROR_MAX_CHARS` characters."""
    if text is None or len(text) <= ERROR_MAX_CHARS:
        return text
    return text[: ERROR_MAX_CHARS - 1] + "…"


def signing_secrets(current: str, previous: str | None, previous_until: int | None, now: int) -> list[str]:
    """The secrets a delivery is signed with at ``now``: the current one, and the previous one
    while a rotation's grace lasts."""
    if previous is not None and previous_until is not None and now < previous_until:
        return [current, previous]
    return [current]


@dataclass(frozen=True, slots=True)
class Target:
    """An enabled endpoint as a deliverer needs it (its secrets opened, never shown)."""

    id: str
    namespace_id: str
    url: str
    versions: tuple[tuple[str, str], ...]
    pools: tuple[str, ...]
    concurrency: int
    timeout_ms: int
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_secret_expires_at: int | None
    updated_at: int

    @property
    def worker_id(self) -> str:
        return lease_owner(self.id)

    def secrets(self, now: int) -> list[str]:
        return signing_secrets(self.secret, self.previous_secret, self.previous_secret_expires_at, now)


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What a deliverer reads before it claims: the breaker, and the runs leased to the endpoint
    across all replicas. None of it when the endpoint is gone or disabled."""

    breaker: Breaker
    in_flight: int
