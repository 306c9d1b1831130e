"""Wake-ups: tell waiting claimers, long-polls and the timer loop that something changed.

In one process a :class:`WakeHub` wakes waiters directly. Across processes PostgreSQL carries the
same keys: a trigger on ``runs`` sends ``NOTIFY aiki_wake`` (ready work, status changes, new
deadlines) and :class:`PgListener` feeds them into the local hub. Optionally Redis carries them too
(``redis_wakeups.RedisRelay``): it forwards every key notified in this process and delivers the
keys other processes published. Keys:

* ``ready:<namespace id>`` — a run became claimable;
* ``run:<run id>`` — a run changed status;
* ``timer`` — a deadline was set that may be earlier than the timer loop's next wake-up;
* ``watch:<namespace id>:<worker id>`` — a newer watch of that worker (Redis only, not NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

CHANNEL = "aiki_wake"

# Waiters look again this often even without a wake-up. Wake-ups are reliable in one process and
# the listener wakes everyone after (re)connecting, so this is only a backstop: short enough to
# bound the damage of a missed notification, long enough that thousands of parked long-polls do
# not turn into thousands of reads per second.
RECHECK_S = 10.0

log = logging.getLogger("aiki.wakeups")


class WakeHub:
    """Per-key wake-ups with versions, so a notification between a check and a wait is never lost.

    :meth:`notify` is for changes made in this process: it also hands the key to every forwarder
    (a relay to other processes). :meth:`deliver` is for keys that came from another process, so a
    relay never echoes what it received.
    """

    def __init__(self) -> None:
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._waiters: defaultdict[str, set[asyncio.Future[Any]]] = defaultdict(set)
        self._forwarders: list[Callable[[str], None]] = []
        self._closed = False

    def version(self, key: str) -> int:
        return self._versions[key]

    def waiting(self, key: str) -> int:
        """How many waiters are parked on ``key`` right now."""
        return len(self._waiters.get(key, ()))

    def add_forwarder(self, forward: Callable[[str], None]) -> None:
        """Also hand every locally notified key to ``forward`` (it must not block)."""
        self._forwarders.append(forward)

    def remove_forwarder(self, forward: Callable[[str], None]) -> None:
        with contextlib.suppress(ValueError):
            self._forwarders.remove(forward)

    def notify(self, key: str) -> None:
        """Wake the waiters of ``key`` after a change made in this process."""
        self.deliver(key)
        for forward in self._forwarders:
            forward(key)

    def deliver(self, key: str) -> None:
        """Wake the waiters of ``key`` after a change another process announced."""
        self._versions[key] += 1
        waiters = self._waiters.pop(key, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: the server is stopping."""
        return self._closed

    def close(self) -> None:
        """The server is stopping: wake every waiter once, so that long-polls (which check
        :attr:`closed` before they park again) answer at once instead of being cut off."""
        self._closed = True
        for key in list(self._waiters):
            self.deliver(key)

    def notify_all(self) -> None:
        """Wake every waiter (after a gap in which notifications from elsewhere may have been lost)."""
        for key in list(self._waiters):
            self.deliver(key)
        self.deliver("timer")

    async def wait(self, key: str, since: int, timeout: float, future: asyncio.Future[Any] | None = None) -> bool:
        """Wait until ``key`` is notified after version ``since``; False on timeout.

        With ``future``, wait on that one: a notification sets it to None, and whoever else holds
        it may set another result (after :meth:`forget`, so no notification gets there first).
        """
        return await self.wait_any({key: since}, timeout, future)

    async def wait_any(
        self, since: Mapping[str, int], timeout: float, future: asyncio.Future[Any] | None = None
    ) -> bool:
        """Wait until one of the keys of ``since`` is notified after its version there; False on
        timeout. ``future`` as for :meth:`wait`."""
        if any(self._versions[key] != version for key, version in since.items()):
            return True
        if timeout <= 0:
            return False
        fut: asyncio.Future[Any] = future if future is not None else asyncio.get_running_loop().create_future()
        for key in since:
            self._waiters[key].add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for key in since:
                self.forget(key, fut)

    def forget(self, key: str, future: asyncio.Future[Any]) -> None:
        """``future`` no longer waits on ``key``."""
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[key]


class PgListener:
    """A dedicated asyncpg connection that LISTENs and forwards notifications to a hub."""

    def __init__(self, dsn: str, hub: WakeHub) -> None:
        self._dsn = dsn
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aiki-pg-listener")
        # Wait for the first LISTEN so nothing committed after start() is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._hub.deliver(payload)

    async def _run(self) -> None:
        import asyncpg

        delay = 0.1
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(CHANNEL, self._on_notify)
                self._ready.set()
                delay = 0.1
                # Anything may have happened while we were not listening: wake everyone once.
                self._hub.notify_all()
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, closed=closed: closed.set())
                await closed.wait()
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close())
                raise
            except Exception as exc:  # the database may be down: retry with backoff
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
