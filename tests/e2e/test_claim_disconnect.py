"""A claim whose client is gone claims nothing: its long-poll is withdrawn when the connection
closes, and runs it claimed before the server noticed go straight back to the queue. A watch
whose client is gone ends at once too.

A killed worker's parked claim used to stay on the server for its whole wait (20 s) and keep
claiming: its runs then waited out a lease and used up a recovery. Both databases, a real server
socket (the harness's ``http`` transport: uvicorn in this process, so the test can see the claims
parked on the server).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncpg
import msgspec
import pytest

from aiki import Client, Run, task, workflow
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
from tests.conftest import LoopbackHttp
from tests.integration.helpers import API, WAIT, get_history, new_key

pytestmark = [pytest.mark.timeout(120)]


@task(name="disconnect-step")
async def step(value: str) -> str:
    return value


disconnect_wf = workflow(name="claim-disconnect")


@disconnect_wf.v("1.0.0")
async def disconnect_v1(run: Run, key: str) -> str:
    return await step.start(run, key)


@pytest.fixture
def transport() -> str:
    """Always a real socket: the test closes a client's connection under the server."""
    return "http"


@pytest.fixture
def served(aiki: Any) -> tuple[LoopbackHttp, Client]:
    """The harness's server on its loopback socket, and its SDK client (over HTTP).

    Parked claims never look again on their own (the recheck is an hour, and the dead claim
    waits two minutes): only the disconnect can end the dead claim's wait within the test.
    """
    settings = aiki.server.services.settings
    aiki.server.services.settings = dataclasses.replace(settings, wake_recheck_ms=3_600_000)
    assert aiki.loopback is not None
    return aiki.loopback, aiki.client


class RawClaim:
    """A claim long-poll sent on a raw connection, which the test closes as a killed worker would."""

    path = "/workers/claim"

    def __init__(self, url: str, worker_id: str, wait_ms: int = 120_000, max_runs: int = 5) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        request = ClaimRequest(
            worker_id=worker_id,
            versions=[VersionRef("claim-disconnect", "1.0.0")],
            max_runs=max_runs,
            wait_ms=wait_ms,
        )
        self.body = msgspec.json.encode(request)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {API}{self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body)
        await self.writer.drain()

    async def close(self) -> None:
        assert self.writer is not None
        self.writer.close()
        await self.writer.wait_closed()


async def _register(sdk: Client, worker_id: str) -> None:
    await connect(sdk).register_worker(
        RegisterWorkerRequest(worker_id=worker_id, host="t", versions=[VersionSpec("claim-disconnect", "1.0.0")])
    )


async def _until_parked(aiki: Any, count: int) -> None:
    """Until exactly ``count`` claims are parked on the server."""
    claims = aiki.server.services.claims
    async with asyncio.timeout(WAIT.total_seconds()):
        while claims.parked(DEFAULT_NAMESPACE_ID) != count:  # noqa: ASYNC110 - server state, no event
            await asyncio.sleep(0.005)


async def test_a_claim_closed_by_its_client_is_withdrawn_and_claims_nothing(
    aiki: Any, served: tuple[LoopbackHttp, Client]
) -> None:
    srv, sdk = served
    dead = f"dead-{new_key()}"
    await _register(sdk, dead)
    claim = RawClaim(srv.url, dead)
    await claim.send()
    await _until_parked(aiki, 1)
    # A live worker parks its claim after the dead one: the oldest parked claim is offered first.
    await aiki.worker([disconnect_v1], concurrency=1)
    await _until_parked(aiki, 2)

    await claim.close()  # the worker process is killed: its connection closes
    await _until_parked(aiki, 1)  # the server withdrew the dead claim

    key = new_key()
    handle = await disconnect_v1.start(sdk, key)
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key
    history = await get_history(aiki.http, handle.id)
    claimed_by = [h.get("reason", "") for h in history if h["to_status"] == "running"]
    assert len(claimed_by) == 1, history
    assert dead not in claimed_by[0], history
    run = (await aiki.http.get(f"{API}/runs/{handle.id}")).json()
    assert run["attempt"] == 1


# Holding the claim mid-statement needs PostgreSQL's table locks: PostgreSQL only.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_runs_claimed_for_a_client_that_left_go_back_to_the_queue_at_once(
    aiki: Any, served: tuple[LoopbackHttp, Client], db_url: str
) -> None:
    """The client leaves while the claim is being written: the runs it took are handed back (revision
    bumped, no recovery used) and a live worker runs them without waiting for a lease to expire."""
    srv, sdk = served
    dead = f"dead-{new_key()}"
    await _register(sdk, dead)
    key = new_key()
    handle = await disconnect_v1.start(sdk, key)  # queued: nobody claims yet
    holder = await asyncpg.connect(db_url)
    try:
        held = holder.transaction()
        await held.start()
        # The claim's one statement also reads `events` (whether any wait for the runs it takes):
        # it waits for this lock, which nothing else the server does now needs.
        await holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        claim = RawClaim(srv.url, dead, wait_ms=0)
        await claim.send()

        async def claim_waits_for_the_lock() -> bool:
            # Inside a transaction the activity view is a snapshot taken at its first read.
            await holder.execute("SELECT pg_stat_clear_snapshot()")
            found = await holder.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%''claimed by '' ||%'"
            )
            return bool(found)

        async with asyncio.timeout(WAIT.total_seconds()):
            while not await claim_waits_for_the_lock():  # noqa: ASYNC110 - database state, no event
                await asyncio.sleep(0.005)
        connected = srv.connections()
        await claim.close()
        # The server noticed the disconnect while the claim is still being written.
        async with asyncio.timeout(WAIT.total_seconds()):
            while srv.connections() == connected:  # noqa: ASYNC110 - server state, no event
                await asyncio.sleep(0.005)
        await held.rollback()
    finally:
        await holder.close()

    await aiki.worker([disconnect_v1], concurrency=1)
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key
    history = [(h.get("from_status"), h["to_status"], h.get("reason")) for h in await get_history(aiki.http, handle.id)]
    assert history[:3] == [
        (None, "queued", None),
        ("queued", "running", f"claimed by {dead}"),
        ("running", "queued", f"claimed by {dead}, whose request had ended: handed back"),
    ], history
    # No lease had to expire: the live worker's claim is the next step.
    assert history[3][:2] == ("queued", "running"), history
    assert not any("expired" in (reason or "") for _, _, reason in history), history
    run = (await aiki.http.get(f"{API}/runs/{handle.id}")).json()
    assert (run["revision"], run["attempt"]) == (3, 1)


async def test_a_watch_closed_by_its_client_ends_at_once(aiki: Any, served: tuple[LoopbackHttp, Client]) -> None:
    """A killed worker's parked watch no longer stays on the server for its whole wait (a minute)."""
    srv, sdk = served
    # Nothing but the disconnect may end the watch within the test: not even its run's lease expiring.
    services = aiki.server.services
    services.settings = dataclasses.replace(services.settings, lease_ttl_ms=3_600_000)
    dead = f"dead-{new_key()}"
    await _register(sdk, dead)
    await disconnect_v1.start(sdk, new_key())
    claimed = await connect(sdk).claim(
        ClaimRequest(worker_id=dead, versions=[VersionRef("claim-disconnect", "1.0.0")], max_runs=1, wait_ms=5000)
    )
    [activation] = claimed.activations
    watch = RawClaim(srv.url, dead)
    watch.path = "/workers/watch"
    watch.body = msgspec.json.encode(
        WatchRequest(worker_id=dead, runs=[HeartbeatRun(activation.run_id, activation.revision)], wait_ms=60_000)
    )
    hub = aiki.server.services.hub
    key = f"watch:{DEFAULT_NAMESPACE_ID}:{dead}"
    await watch.send()
    async with asyncio.timeout(WAIT.total_seconds()):
        while hub.waiting(key) != 1:  # noqa: ASYNC110 - server state, no event
            await asyncio.sleep(0.005)

    await watch.close()  # the worker process is killed: its connection closes
    async with asyncio.timeout(WAIT.total_seconds()):  # well before the watch's own minute
        while hub.waiting(key) != 0:  # noqa: ASYNC110 - server state, no event
            await asyncio.sleep(0.005)
