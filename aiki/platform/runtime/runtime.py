"""The server's background runtime: ``await runtime.start()`` / ``await runtime.stop()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiki.platform.db import migrate
from aiki.platform.db.engine import WakeListener
from aiki.platform.db.redis_wakeups import RedisRelay, channel_for, cluster_id
from aiki.platform.runtime.push_loop import WAKE_KEY as ENDPOINTS_KEY
from aiki.platform.runtime.push_loop import PushLoop
from aiki.platform.runtime.schedule_loop import run_schedule_loop
from aiki.platform.runtime.timer_loop import run_timer_loop
from aiki.platform.services.context import Services

log = logging.getLogger("aiki.runtime")


class Runtime:
    """Migrations on start (when enabled), the cross-process wake-up relays, the timer and
    schedule loops, and the push loop (deliveries to push endpoints, ``push_loop.py``).

    Every loop is safe with any number of replicas on one database: the timer loop locks due rows
    with SKIP LOCKED and re-checks the status it acts on, so a deadline fires (and an expired lease
    is recovered) once. Wake-ups cross processes over PostgreSQL LISTEN/NOTIFY (``pg_listen``)
    and/or Redis pub/sub (``redis_url``); without either, the timer loop still polls every
    ``timer_poll_ms`` and waiters re-check every ``RECHECK_S``.
    """

    def __init__(self, services: Services, *, pg_listen: bool = True, redis_url: str | None = None) -> None:
        self._svc = services
        self.pg_listen = pg_listen
        self.redis_url = redis_url
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: WakeListener | None = None
        self._relay: RedisRelay | None = None
        self._stopping = asyncio.Event()
        self.push: PushLoop | None = None
        self.started = False

    async def start(self) -> Runtime:
        if self.started:
            return self
        db = self._svc.db
        if db.auto_migrate:
            await migrate.upgrade(db)
        listener = db.listener(self._svc.hub) if self.pg_listen else None
        if listener is not None:
            # The LISTEN connection is one of the database's pool_size: the pool shrinks by one.
            db.reserve_connection("the LISTEN connection")
            self._listener = listener
            await listener.start()
        if self.redis_url:
            self._relay = RedisRelay(self.redis_url, self._svc.hub, channel_for(await cluster_id(db)))
            await self._relay.start()
        self._stopping = asyncio.Event()
        self._tasks.append(asyncio.create_task(run_timer_loop(self._svc, self._stopping), name="aiki-timers"))
        self._tasks.append(asyncio.create_task(run_schedule_loop(self._svc, self._stopping), name="aiki-schedules"))
        self.push = PushLoop(self._svc, self._stopping)
        self._tasks.append(asyncio.create_task(self.push.run(), name="aiki-push"))
        self.started = True
        return self

    async def stop(self) -> None:
        # Let each loop finish its current database call: cancelling one mid-query can leave a
        # driver thread reporting to an event loop that is about to close.
        self._stopping.set()
        self._svc.hub.notify("timer")
        self._svc.hub.notify("schedule")
        self._svc.hub.notify(ENDPOINTS_KEY)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
            self._svc.db.unreserve_connection()
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        self.started = False

    async def __aenter__(self) -> Runtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
