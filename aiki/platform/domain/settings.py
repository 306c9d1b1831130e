"""Server settings the core reads: lease lengths, limits. Plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Tunables of the orchestration core; the defaults suit production.

    Attributes:
        lease_ttl_ms: how long a claim holds a run without a heartbeat or a write.
        heartbeat_interval_ms: how often workers are told to heartbeat (a third of the lease).
        max_recoveries: lease expiries a run survives before it fails with ``recovery_exhausted``.
        max_payload_bytes: the largest request body accepted (413 beyond).
        claim_batch_limit: the most runs one claim may take.
        timer_poll_ms: the longest the timer loop sleeps without a notification.
        stall_after_ms: a run queued this long without a claim becomes ``stalled``.
        sleep_hold_max_ms: a sleep this short may be held by its executor (0: never); see
            ``docs/internals.md``.
        sleep_hold_grace_ms: how long after a held sleep's end the server wakes the run itself when
            its executor has not resumed it (it was lost).
        wake_recheck_ms: how often a parked claim looks again without a wake-up (a backstop for
            a wake-up lost between processes; see ``aiki.platform.db.wakeups.RECHECK_S``).
        endpoints_allow_private: push endpoints may have URLs resolving to loopback or private
            addresses (``AIKI_ENDPOINTS_ALLOW_PRIVATE=1``; ``aiki dev`` and tests). Off in production.
        endpoint_retry_base_ms / endpoint_retry_max_ms: a failed delivery is tried again after
            ``base * 2**(attempt-1)`` ms with jitter, at most ``max``.
        endpoint_max_attempts: deliveries of one activation before its run goes back to the queue.
        endpoint_breaker_threshold: consecutive failed deliveries that open an endpoint's breaker.
        endpoint_breaker_cooldown_ms / endpoint_breaker_cooldown_max_ms: how long an open breaker
            waits before one probe delivery (doubling each time it opens again, at most ``max``).
    """

    lease_ttl_ms: int = 30_000
    heartbeat_interval_ms: int = 10_000
    max_recoveries: int = 10
    max_payload_bytes: int = 1_048_576
    claim_batch_limit: int = 100
    timer_poll_ms: int = 1_000
    stall_after_ms: int = 24 * 3600 * 1000
    sleep_hold_max_ms: int = 1_000
    sleep_hold_grace_ms: int = 1_000
    wake_recheck_ms: int = 10_000
    endpoints_allow_private: bool = False
    endpoint_retry_base_ms: int = 500
    endpoint_retry_max_ms: int = 30_000
    endpoint_max_attempts: int = 5
    endpoint_breaker_threshold: int = 5
    endpoint_breaker_cooldown_ms: int = 5_000
    endpoint_breaker_cooldown_max_ms: int = 60_000

    @property
    def stall_sweep_interval_ms(self) -> int:
        """How often the stall sweep runs: a tenth of ``stall_after_ms``, between 50 ms and a minute."""
        return max(50, min(60_000, self.stall_after_ms // 10))
