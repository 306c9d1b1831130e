"""A cancel or pause made through one server reaches a worker connected to another at once.

Two servers share one PostgreSQL database, each with its own wake-up hub as two processes would
have; the worker's watch is parked on server A, and the run is cancelled or paused through server
B. Heartbeats come once a minute: only B's change reaching A as a wake-up (LISTEN/NOTIFY, or Redis
with LISTEN off) makes it in time. The workflows are those of tests/integration/test_prompt_fencing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from aiki import client, database, server, worker
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    HeartbeatRun,
    RegisterWorkerRequest,
    VersionRef,
    VersionSpec,
    WatchRequest,
)
from tests.e2e.procs import poll_until
from tests.integration.helpers import LEDGER, WAIT, new_key
from tests.integration.test_prompt_fencing import (
    CANCELLED,
    ENTERED,
    HEARTBEAT,
    PROMPT_S,
    RELEASE,
    _events,
    two_steps_v1,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(120)]

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def two_servers(db_url: str, *, pg_listen: bool, redis_url: str | None) -> AsyncIterator[tuple[Any, Any]]:
    options: dict[str, Any] = {"heartbeat_interval": HEARTBEAT, "lease_ttl": 3 * HEARTBEAT}
    servers = [
        server(db=database(url=db_url, migrate=False, pool_size=4), pg_listen=pg_listen, redis_url=redis_url, **options)
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


@pytest.mark.parametrize(("pg_listen", "redis_url"), [(True, None), (False, REDIS_URL)], ids=["listen", "redis"])
async def test_cancel_and_pause_through_another_server_reach_the_worker_at_once(
    e2e_db_url: str, pg_listen: bool, redis_url: str | None
) -> None:
    async with two_servers(e2e_db_url, pg_listen=pg_listen, redis_url=redis_url) as (a, b):
        client_a, client_b = client(handler=a.handler), client(handler=b.handler)
        w = await worker(workflows=[two_steps_v1], concurrency=4).spawn(client_a)
        try:
            # Cancel: the running task gets CancelledError at once, the next one never starts.
            key = new_key()
            _events(key)
            handle = await two_steps_v1.start(client_b, key)
            await asyncio.wait_for(ENTERED[key].wait(), WAIT.total_seconds())
            await poll_until(lambda: a.services.hub.waiting(f"run:{handle.id}") > 0, timeout=10, what="a watch")
            await handle.cancel()
            await asyncio.wait_for(CANCELLED[key].wait(), PROMPT_S)
            await poll_until(lambda: w.in_flight == 0, timeout=PROMPT_S, what="the execution ended")
            assert LEDGER.count("pf-next", key) == 0

            # Pause: the running task finishes and is recorded; resumed, the run goes on from there.
            key = new_key()
            _events(key)
            handle = await two_steps_v1.start(client_b, key)
            await asyncio.wait_for(ENTERED[key].wait(), WAIT.total_seconds())
            await poll_until(lambda: a.services.hub.waiting(f"run:{handle.id}") > 0, timeout=10, what="a watch")
            await handle.pause()
            await poll_until(
                lambda: any(e.pause_requested for e, _ in w._executions.values()),
                timeout=PROMPT_S,
                what="the executor heard of the pause",
            )
            RELEASE[key].set()
            await poll_until(lambda: w.in_flight == 0, timeout=WAIT.total_seconds(), what="the executor stopped")
            assert (await handle.describe()).status == "paused"
            assert LEDGER.count("pf-next", key) == 0
            await handle.resume()
            assert await asyncio.wait_for(handle.result(), WAIT.total_seconds()) == [f"released {key}", f"next {key}"]
            assert LEDGER.count("pf-blocking", key) == 1
            assert LEDGER.count("pf-next", key) == 1
        finally:
            await w.stop(grace=timedelta(seconds=2))
            await client_a.close()
            await client_b.close()


async def test_a_newer_watch_on_another_server_ends_the_older_one_through_redis(e2e_db_url: str) -> None:
    """The worker's watch moves to another server (a load balancer): the older one, parked on the
    first, answers at once (empty) instead of staying open for its whole wait."""
    async with two_servers(e2e_db_url, pg_listen=False, redis_url=REDIS_URL) as (a, b):
        client_a, client_b = client(handler=a.handler), client(handler=b.handler)
        try:
            key = new_key()
            worker_id = f"pf-watcher-{key}"
            spec = VersionSpec("pf-two-steps", "1.0.0")
            await connect(client_a).register_worker(
                RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[spec])
            )
            _events(key)
            await two_steps_v1.start(client_a, key)
            refs = [VersionRef("pf-two-steps", "1.0.0")]
            claim = ClaimRequest(worker_id=worker_id, versions=refs, max_runs=1, wait_ms=5000)
            [claimed] = (await connect(client_a).claim(claim)).activations
            runs = [HeartbeatRun(claimed.run_id, claimed.revision)]
            request = WatchRequest(worker_id=worker_id, runs=runs, wait_ms=60_000)
            mine = f"watch:{DEFAULT_NAMESPACE_ID}:{worker_id}"

            older = asyncio.create_task(connect(client_a).watch(request))
            await poll_until(lambda: a.services.hub.waiting(mine) == 1, timeout=10, what="the older watch parked")
            newer = asyncio.create_task(connect(client_b).watch(request))
            answer = await asyncio.wait_for(older, PROMPT_S)
            assert (answer.stale, answer.paused) == ([], [])
            await poll_until(lambda: b.services.hub.waiting(mine) == 1, timeout=10, what="the newer watch parked")
            assert not newer.done()  # its own notification does not come back to end it
            newer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await newer
        finally:
            await client_a.close()
            await client_b.close()
