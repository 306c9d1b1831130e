"""Wake-ups over Redis pub/sub, for deployments where PostgreSQL LISTEN is unavailable or too far away.

Every key this process notifies on its :class:`~aiki.platform.db.wakeups.WakeHub` is published on one
Redis channel, and every key another process published there is delivered to the local hub. The
keys are the same as over NOTIFY (``ready:<namespace id>``, ``run:<run id>``, ``timer``), plus
``watch:<namespace id>:<worker id>`` (a newer watch of that worker ends its older ones).

The channel is ``aiki:wake:<cluster>``, where ``<cluster>`` identifies the database the servers
share (see :func:`cluster_id`): servers of one Aiki deployment meet on it, and deployments sharing
one Redis (another database, another tenant) never see each other's wake-ups. A message is

    <sender id>\\n<key>\\n<key>...

Keys notified while a publish is in flight are coalesced into the next message, so a burst of
thousands of changes costs a handful of publishes. A sender ignores its own messages.

Pub/sub is at most once: a message lost while a subscriber reconnects is made up for by waking
every local waiter after each (re)subscription, and by the waiters' own periodic re-checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from typing import Any

from aiki.platform.db.engine import ConfigurationError, Database
from aiki.platform.db.wakeups import WakeHub

CHANNEL_PREFIX = "aiki:wake:"
# How long one read of the subscription blocks before the loop checks whether to stop.
_READ_TIMEOUT_S = 0.5

log = logging.getLogger("aiki.wakeups.redis")


async def cluster_id(db: Database) -> str:
    """A short stable id of the database the servers share (the Redis channel's suffix).

    On PostgreSQL: the cluster's ``system_identifier`` and the database name, so every server that
    reaches the same database, under whatever host name, computes the same id. On SQLite: the
    database file.
    """
    return hashlib.sha256((await db.identity()).encode()).hexdigest()[:16]


def channel_for(cluster: str) -> str:
    return f"{CHANNEL_PREFIX}{cluster}"


class RedisRelay:
    """Publishes local wake-ups to Redis and delivers other processes' wake-ups to the local hub."""

    def __init__(self, url: str, hub: WakeHub, channel: str) -> None:
        self._url = url
        self._hub = hub
        self.channel = channel
        self.sender = uuid.uuid4().hex
        self._pending: set[str] = set()
        self._flush = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._redis: Any = None

    async def start(self) -> None:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ConfigurationError(
                "REDIS_URL is set but the redis package is not installed: pip install 'aiki[redis]'"
            ) from None
        try:
            self._redis = redis.from_url(
                self._url, health_check_interval=30, socket_timeout=5, socket_connect_timeout=5
            )
        except ValueError as exc:
            raise ConfigurationError(f"REDIS_URL {self._url!r} is not a Redis URL: {exc}") from None
        self._hub.add_forwarder(self._forward)
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(), name="aiki-redis-subscriber"),
            asyncio.create_task(self._publish_loop(), name="aiki-redis-publisher"),
        ]
        # Wait for the first subscription so nothing published after start() is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        self._hub.remove_forwarder(self._forward)
        # The loops end at their next check: cancelling a Redis read midway may leave the client
        # unable to close its connection.
        self._stopping.set()
        self._flush.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_READ_TIMEOUT_S + 2)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    def _forward(self, key: str) -> None:
        self._pending.add(key)
        self._flush.set()

    async def _publish_loop(self) -> None:
        delay = 0.1
        while True:
            await self._flush.wait()
            self._flush.clear()
            if self._stopping.is_set():
                return
            keys, self._pending = self._pending, set()
            if not keys:
                continue
            message = "\n".join([self.sender, *sorted(keys)])
            try:
                await self._redis.publish(self.channel, message)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Dropped: the other processes' periodic re-checks make up for it.
                log.warning("publishing wake-ups to Redis failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _on_message(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        sender, _, body = text.partition("\n")
        if sender == self.sender:
            return
        for key in body.split("\n"):
            if key:
                self._hub.deliver(key)

    async def _subscribe_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=_READ_TIMEOUT_S)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "subscribe":
                        self._ready.set()
                        delay = 0.1
                        # Anything may have been published while we were not subscribed.
                        self._hub.notify_all()
                    elif kind == "message":
                        self._on_message(message["data"])
            except Exception as exc:  # Redis may be down: retry with backoff
                log.warning("Redis subscription failed (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
