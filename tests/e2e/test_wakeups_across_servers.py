"""Wake-ups cross server processes: over LISTEN/NOTIFY, over Redis with LISTEN off, and not without either.

Two servers share one PostgreSQL database; each has its own wake-up hub, exactly as two processes
would. A worker is connected to server A; runs are started, and events sent, through server B. The
worker's claim is a long-poll parked on A, which only re-reads the database on its own every 10 s:
a pickup well under a second means B's change reached A as a wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aiki import client, database, server, worker
from aiki.platform.db.redis_wakeups import CHANNEL_PREFIX, RedisRelay, channel_for, cluster_id
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.db.wakeups import WakeHub
from tests.e2e.multiproc_workflows import PROBE_SLEEP_MS, TIMES_ENV, probe_v1, read_stamps
from tests.e2e.procs import poll_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(120)]

REDIS_URL = "redis://127.0.0.1:6379/0"
READY_KEY = f"ready:{DEFAULT_NAMESPACE_ID}"
# Generous for a loaded 2-core machine; without a wake-up the figure would be ~10 s.
QUICK_S = 1.0


@dataclass
class Probe:
    pickup_s: float
    sleep_overshoot_s: float
    resume_s: float


@contextlib.asynccontextmanager
async def two_servers(db_url: str, *, pg_listen: bool, redis_url: str | None) -> AsyncIterator[tuple[Any, Any]]:
    servers = [
        server(db=database(url=db_url, migrate=False, pool_size=4), pg_listen=pg_listen, redis_url=redis_url)
        for _ in range(2)
    ]
    started = []
    try:
        for s in servers:
            await s.runtime.start()
            started.append(s)
        yield servers[0], servers[1]
    finally:
        for s in started:
            await s.runtime.stop()
            await s.db.dispose()


async def wait_parked(srv: Any) -> None:
    """Until the worker's claim long-poll is parked on ``srv`` (so a quick pickup needs a wake-up)."""
    await poll_until(lambda: srv.services.hub.waiting(READY_KEY) > 0, timeout=10, what="a parked claim")


async def probe_once(a: Any, client_b: Any, times: Path, key: str) -> Probe:
    await wait_parked(a)
    t0 = time.time_ns()
    handle = await probe_v1.start(client_b, key)
    stamps: dict[tuple[str, str], int] = {}

    def stamped(what: str) -> bool:
        stamps.update(read_stamps(times))
        return (handle.id, what) in stamps

    await poll_until(lambda: stamped("a"), timeout=30, what="task a", interval=0.005)
    await poll_until(lambda: stamped("b"), timeout=30, what="task b", interval=0.005)
    view = await client_b.get_run(handle.id, wait_for=["awaiting_event"], timeout_ms=30_000)
    assert view.status == "awaiting_event", view
    await wait_parked(a)
    t_send = time.time_ns()
    await handle.events.go.send(None)
    await poll_until(lambda: stamped("c"), timeout=30, what="task c", interval=0.005)
    async with asyncio.timeout(30):
        assert await handle.result() == ["a", "b", "c"]
    return Probe(
        pickup_s=(stamps[(handle.id, "a")] - t0) / 1e9,
        sleep_overshoot_s=(stamps[(handle.id, "b")] - stamps[(handle.id, "a")]) / 1e9 - PROBE_SLEEP_MS / 1000,
        resume_s=(stamps[(handle.id, "c")] - t_send) / 1e9,
    )


@pytest.mark.parametrize(("pg_listen", "redis_url"), [(True, None), (False, REDIS_URL)], ids=["listen", "redis"])
async def test_a_run_started_on_one_server_is_picked_up_by_a_worker_on_another_at_once(
    e2e_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_listen: bool, redis_url: str | None
) -> None:
    times = tmp_path / "times.txt"
    monkeypatch.setenv(TIMES_ENV, str(times))
    async with two_servers(e2e_db_url, pg_listen=pg_listen, redis_url=redis_url) as (a, b):
        client_a, client_b = client(handler=a.handler), client(handler=b.handler)
        handle = await worker(workflows=[probe_v1], concurrency=4).spawn(client_a)
        try:
            probes = [await probe_once(a, client_b, times, f"probe-{i}") for i in range(3)]
        finally:
            await handle.stop(grace=timedelta(seconds=2))
            await client_a.close()
            await client_b.close()
    for probe in probes:
        assert probe.pickup_s < QUICK_S, probes
        assert probe.resume_s < QUICK_S, probes
        assert probe.sleep_overshoot_s < QUICK_S, probes


async def test_without_listen_or_redis_another_servers_run_waits_for_the_recheck(
    e2e_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same setup with no cross-process wake-up leaves the run waiting."""
    times = tmp_path / "times.txt"
    monkeypatch.setenv(TIMES_ENV, str(times))
    async with two_servers(e2e_db_url, pg_listen=False, redis_url=None) as (a, b):
        client_a, client_b = client(handler=a.handler), client(handler=b.handler)
        handle = await worker(workflows=[probe_v1], concurrency=4).spawn(client_a)
        try:
            await wait_parked(a)
            run = await probe_v1.start(client_b, "unheard")
            with pytest.raises(AssertionError, match="timed out"):
                await poll_until(lambda: (run.id, "a") in read_stamps(times), timeout=2.5, what="task a")
            view = await client_b.get_run(run.id)
            assert view.status == "queued", view
        finally:
            await handle.stop(grace=timedelta(seconds=2))
            await client_a.close()
            await client_b.close()


async def test_redis_relay_coalesces_ignores_its_own_messages_and_names_the_channel_after_the_database(
    e2e_db_url: str,
) -> None:
    db = database(url=e2e_db_url, migrate=False, pool_size=1)
    try:
        cluster = await cluster_id(db)
    finally:
        await db.dispose()
    # Another host name for the same database yields the same channel; another database does not.
    alias = database(url=e2e_db_url.replace("127.0.0.1", "localhost"), migrate=False, pool_size=1)
    other = database(url=e2e_db_url.rsplit("/", 1)[0] + "/postgres", migrate=False, pool_size=1)
    try:
        assert await cluster_id(alias) == cluster
        assert await cluster_id(other) != cluster
    finally:
        await alias.dispose()
        await other.dispose()
    channel = channel_for(cluster)
    assert channel == f"{CHANNEL_PREFIX}{cluster}"

    hub_a, hub_b = WakeHub(), WakeHub()
    relay_a, relay_b = RedisRelay(REDIS_URL, hub_a, channel), RedisRelay(REDIS_URL, hub_b, channel)
    stranger_hub = WakeHub()
    stranger = RedisRelay(REDIS_URL, stranger_hub, channel_for("someone-else"))
    for relay in (relay_a, relay_b, stranger):
        await relay.start()
    try:
        keys = [f"run:r{i}" for i in range(50)]
        waits = [asyncio.create_task(hub_b.wait(k, hub_b.version(k), timeout=5)) for k in keys]
        own = asyncio.create_task(hub_a.wait("run:r0", hub_a.version("run:r0") + 1, timeout=1))
        for key in keys:
            hub_a.notify(key)
        assert all(await asyncio.gather(*waits))
        # A's own message does not come back to it as a second wake-up.
        assert await own is False
        assert hub_a.version("run:r0") == 1
        # Another deployment's channel heard nothing.
        assert stranger_hub.version("run:r0") == 0
    finally:
        for relay in (relay_a, relay_b, stranger):
            await relay.stop()
