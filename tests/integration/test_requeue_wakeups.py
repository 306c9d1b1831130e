"""A run that becomes claimable again is claimed promptly: never left for the periodic recheck.

On PostgreSQL a claim skips rows another transaction holds (``SKIP LOCKED``). When that
transaction commits without changing the run's status (an event sent to a run already queued, a
parent locking its queued child to wait for it), nothing announces the run again, and it waited
for the recheck of parked claims (10 s). Here that recheck is set to an hour, so a lost wake-up
hangs the scenario until the test's timeout. Both databases, in process and over HTTP (the
``transport`` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from aiki import Client, Run, event, task, workflow
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import RegisterWorkerRequest, VersionSpec

from .helpers import WAIT, new_key

RUNS = 8
CHILDREN = 5
NEVER_MS = 3_600_000  # the parked claims' recheck: far beyond any test timeout


@pytest.fixture
async def harness(db_url: str, transport: str) -> AsyncIterator[Any]:
    """The ``aiki`` harness with the recheck of parked claims made an hour."""
    from tests.conftest import AikiHarness

    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    h = AikiHarness(kind, db_url, transport=transport)
    h.server.services.settings = dataclasses.replace(h.server.services.settings, wake_recheck_ms=NEVER_MS)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def sdk(harness: Any) -> Client:
    """The harness's client: its local port, or HTTP on a loopback socket (the ``transport``)."""
    client: Client = harness.client
    return client


@task(name="requeue-step")
async def step(value: str) -> str:
    return value


two_events_wf = workflow(name="requeue-two-events")


@two_events_wf.v("1.0.0", events={"first": event(), "second": event()})
async def two_events_v1(run: Run, key: str) -> list[Any]:
    first = await run.events.first.wait(timeout=timedelta(minutes=5))
    await step.start(run, key)
    second = await run.events.second.wait(timeout=timedelta(minutes=5))
    return [first.data, second.data]


async def test_two_events_sent_back_to_back_are_taken_without_the_recheck(harness: Any, sdk: Client) -> None:
    await harness.worker([two_events_v1], concurrency=RUNS)
    handles = [await two_events_v1.start(sdk, new_key()) for _ in range(RUNS)]

    async def scenario(handle: Any) -> list[Any]:
        await handle.wait_for_status("awaiting_event", timeout=WAIT)
        # Back to back: the second arrives while the first has just queued the run.
        await handle.events.first.send(1)
        await handle.events.second.send(2)
        return await handle.result()  # type: ignore[no-any-return]

    async with asyncio.timeout(WAIT.total_seconds()):
        results = await asyncio.gather(*(scenario(h) for h in handles))
    assert results == [[1, 2]] * RUNS


leaf_wf = workflow(name="requeue-leaf")


@leaf_wf.v("1.0.0")
async def leaf_v1(run: Run, value: str) -> str:
    return await step.start(run, value)


chain_wf = workflow(name="requeue-chain")


@chain_wf.v("1.0.0")
async def chain_v1(run: Run, key: str) -> list[Any]:
    outputs = []
    for i in range(CHILDREN):
        child = await leaf_v1.start_as_child(run, f"{key}-{i}")
        outputs.append((await child.wait_for_status("completed", timeout=timedelta(minutes=5))).output)
    return outputs


async def test_a_parent_running_children_one_after_another_never_waits_for_the_recheck(
    harness: Any, sdk: Client
) -> None:
    await harness.worker([chain_v1, leaf_v1], concurrency=2 * RUNS)
    keys = [new_key() for _ in range(RUNS)]
    async with asyncio.timeout(WAIT.total_seconds()):
        handles = [await chain_v1.start(sdk, key) for key in keys]
        results = [await h.result() for h in handles]
    assert results == [[f"{key}-{i}" for i in range(CHILDREN)] for key in keys]


# SQLite has no row locks (a claim waits for the writer instead of passing over): PostgreSQL only.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_run_a_claim_passed_over_is_claimed_once_its_row_is_released(
    harness: Any, sdk: Client, db_url: str
) -> None:
    """The mechanism itself: a claim skips the row of a queued run that another transaction holds,
    and that transaction ends without changing the run (no wake-up follows)."""
    await connect(sdk).register_worker(
        RegisterWorkerRequest(
            worker_id=f"registrar-{new_key()}", host="t", versions=[VersionSpec("requeue-leaf", "1.0.0")]
        )
    )
    key = new_key()
    handle = await leaf_v1.start(sdk, key)  # no claimer yet: queued
    holder = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT id FROM runs WHERE id = $1 AND status = 'queued' FOR UPDATE", handle.id)
        await harness.worker([leaf_v1], concurrency=1)
        # The worker's claim looked (passing over the held row) and is now parked.
        claims = harness.server.services.claims
        async with asyncio.timeout(WAIT.total_seconds()):
            while claims.parked(DEFAULT_NAMESPACE_ID) == 0:  # noqa: ASYNC110 - server state, no event
                await asyncio.sleep(0.005)
        assert (await handle.describe()).status == "queued"
        await held.rollback()  # released, unchanged: nothing announces the run
    finally:
        await holder.close()
    async with asyncio.timeout(WAIT.total_seconds()):
        assert await handle.result() == key
