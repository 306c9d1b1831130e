"""The timer loop: sleeps until the earliest deadline, then fires everything due.

It wakes early when a service sets a new deadline (``timer`` key, in-process or via NOTIFY), and
never sleeps longer than ``timer_poll_ms`` so a replica that missed a notification still fires.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiki.platform.db.errors import is_connection_failure
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.context import Services
from aiki.platform.services.timers import fire_due, next_wake_at, stall_sweep

log = logging.getLogger("aiki.runtime.timers")


async def run_timer_loop(svc: Services, stopping: asyncio.Event) -> None:
    backoff = 0.05
    next_sweep = 0
    woken = False  # by a notification, rather than at the deadline it planned
    # Leases expire only from this time on: after the database was unreachable, workers get one
    # lease TTL (from when it answers again) to heartbeat before their leases are held against them.
    leases_from = 0
    unreachable = False
    while not stopping.is_set():
        try:
            since = svc.hub.version("timer")
            # Every new deadline wakes this loop, most of them far off: after such a wake-up one
            # read says whether anything is due before the (heavier) pass that fires it.
            upcoming = await next_wake_at(svc, leases_from=leases_from) if woken else now_ms()
            if unreachable:
                unreachable = False
                leases_from = now_ms() + svc.settings.lease_ttl_ms
                log.info("database reachable again: no lease expires before %d ms from now", svc.settings.lease_ttl_ms)
                upcoming = now_ms()
            if upcoming is not None and upcoming <= now_ms():
                while await fire_due(svc, now_ms(), leases_from=leases_from) >= 200:
                    pass
                upcoming = await next_wake_at(svc, leases_from=leases_from)
            if now_ms() >= next_sweep:
                # The stall sweep rides on this loop: it is a deadline too, only a coarse one.
                while await stall_sweep(svc, now_ms()) >= 500:
                    pass
                next_sweep = now_ms() + svc.settings.stall_sweep_interval_ms
            poll = min(svc.settings.timer_poll_ms, max(1, next_sweep - now_ms()))
            delay_ms = poll if upcoming is None else max(0, min(poll, upcoming - now_ms()))
            backoff = 0.05
            woken = False
            if delay_ms > 0:
                started = time.monotonic()
                woken = await svc.hub.wait("timer", since, delay_ms / 1000)
                # A burst of notifications should not turn into a busy loop of queries.
                if time.monotonic() - started < 0.001:
                    await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_connection_failure(exc):
                unreachable = True
            # The database may be down: keep going, slower.
            log.exception("timer loop iteration failed; retrying in %.2fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
