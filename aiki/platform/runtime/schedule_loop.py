"""The schedule loop: sleeps until the earliest due schedule, then starts its runs.

It wakes early when a schedule is activated or resumed (``schedule`` key, in-process or via
NOTIFY from another replica), and never sleeps longer than ``timer_poll_ms``. The time comes from
``svc.clock`` when a test injected one. Any number of replicas may run it: firing is exactly-once
per occurrence (see ``services/schedules.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiki.platform.services.context import Services
from aiki.platform.services.schedules import WAKE_KEY, clock_now, fire_due, next_fire_at

# Notified after every pass, so a test that swaps the clock can wait until no pass that read the
# old clock is still in flight.
PASS_KEY = "schedule:pass"

log = logging.getLogger("aiki.runtime.schedules")


async def run_schedule_loop(svc: Services, stopping: asyncio.Event) -> None:
    backoff = 0.05
    while not stopping.is_set():
        try:
            since = svc.hub.version(WAKE_KEY)
            await fire_due(svc, clock_now(svc))
            svc.hub.notify(PASS_KEY)
            upcoming = await next_fire_at(svc)
            poll = svc.settings.timer_poll_ms
            delay_ms = poll if upcoming is None else max(0, min(poll, upcoming - clock_now(svc)))
            backoff = 0.05
            if delay_ms > 0:
                started = time.monotonic()
                await svc.hub.wait(WAKE_KEY, since, delay_ms / 1000)
                # A burst of notifications should not turn into a busy loop of queries.
                if time.monotonic() - started < 0.001:
                    await asyncio.sleep(0.001)
            else:
                # Still due: another replica holds the row, or a catch-up continues. Yield briefly.
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database may be down: keep going, slower.
            log.exception("schedule loop iteration failed; retrying in %.2fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
