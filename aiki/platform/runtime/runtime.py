"""The server's background runtime: ``await runtime.start()`` / ``await runtime.stop()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiki.platform.db import migrate
from aiki.platform.db.wakeups import PgListener
from aiki.platform.runtime.schedule_loop import run_schedule_loop
from aiki.platform.runtime.timer_loop import run_timer_loop
from aiki.platform.services.context import Services

log = logging.getLogger("aiki.runtime")


class Runtime:
    """Migrations on start (when enabled), the cross-process wake-up listener and the timer loop."""

    def __init__(self, services: Services) -> None:
        self._svc = services
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: PgListener | None = None
        self._stopping = asyncio.Event()
        self.started = False

    async def start(self) -> Runtime:
        if self.started:
            return self
        db = self._svc.db
        if db.auto_migrate:
            await migrate.upgrade(db)
        if db.is_postgres:
            dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._listener = PgListener(dsn, self._svc.hub)
            await self._listener.start()
        self._stopping = asyncio.Event()
        self._tasks.append(asyncio.create_task(run_timer_loop(self._svc, self._stopping), name="aiki-timers"))
        self._tasks.append(asyncio.create_task(run_schedule_loop(self._svc, self._stopping), name="aiki-schedules"))
        self.started = True
        return self

    async def stop(self) -> None:
        # Let each loop finish its current database call: cancelling one mid-query can leave a
        # driver thread reporting to an event loop that is about to close.
        self._stopping.set()
        self._svc.hub.notify("timer")
        self._svc.hub.notify("schedule")
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
        self.started = False

    async def __aenter__(self) -> Runtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
