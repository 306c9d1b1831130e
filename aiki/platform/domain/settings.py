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

    @property
    def stall_sweep_interval_ms(self) -> int:
        """How often the stall sweep runs: a tenth of ``stall_after_ms``, between 50 ms and a minute."""
        return max(50, min(60_000, self.stall_after_ms // 10))
