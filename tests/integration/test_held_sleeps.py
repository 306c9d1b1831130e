"""Short sleeps held by their executor: recorded like any sleep, resumed in memory without a claim
and a replay, and still safe when the worker is lost, the run cancelled or woken. Both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from aiki import Run, task, worker, workflow
from tests.conftest import AikiHarness

from .helpers import API, LEDGER, WAIT, get_history, new_key

NAP_MS = 300


@task(name="held-clock")
async def held_clock(key: str) -> float:
    LEDGER.hit("held-clock", key)
    return time.monotonic()


held_wf = workflow(name="held-nap")


@held_wf.v("1.0.0")
async def held_v1(run: Run, value: list[Any]) -> list[Any]:
    key, nap_ms = value
    LEDGER.hit("held-body", key)  # once per activation: a replay runs the body again
    before = await held_clock.start(run, key)
    slept = await run.sleep(timedelta(milliseconds=nap_ms), name="nap")
    after = await held_clock.start(run, key + "-after")
    return [after - before, slept.cancelled]


def _statuses(history: list[dict[str, Any]]) -> list[str]:
    return [h["to_status"] for h in history]


async def _harness(db_url: str, transport: str, **options: Any) -> AikiHarness:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    return await AikiHarness(kind, db_url, transport=transport, **options).start()


@pytest.fixture
async def quick_leases(db_url: str, transport: str) -> AsyncIterator[AikiHarness]:
    """Leases of 300 ms: workers heartbeat every 100 ms, several times during a held sleep."""
    harness = await _harness(db_url, transport, lease_ttl=timedelta(milliseconds=300))
    try:
        yield harness
    finally:
        await harness.close()


async def test_a_short_sleep_is_held_and_resumed_without_a_replay(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([held_v1], concurrency=5)
    handle = await held_v1.start(aiki.client, [key, NAP_MS])
    gap, cancelled = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert gap >= NAP_MS / 1000
    assert cancelled is False
    assert LEDGER.count("held-body", key) == 1  # never replayed
    history = _statuses(await get_history(aiki.http, handle.id))
    assert history == ["queued", "running", "sleeping", "running", "completed"]
    detail = (await aiki.http.get(f"{API}/runs/{handle.id}/detail")).json()
    assert [(s["name"], s["status"]) for s in detail["sleeps"]] == [("nap", "completed")]


async def test_heartbeats_during_a_held_sleep_do_not_stop_it(quick_leases: AikiHarness) -> None:
    key = new_key()
    await quick_leases.worker([held_v1], concurrency=5)
    handle = await held_v1.start(quick_leases.client, [key, 700])  # some seven heartbeats long
    gap, _ = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert gap >= 0.7
    assert LEDGER.count("held-body", key) == 1
    assert "queued" not in _statuses(await get_history(quick_leases.http, handle.id))[1:]


async def test_a_worker_without_a_free_slot_does_not_hold(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([held_v1], concurrency=1)
    handle = await held_v1.start(aiki.client, [key, 50])
    await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert _statuses(await get_history(aiki.http, handle.id)).count("queued") == 2  # woken and claimed again
    assert LEDGER.count("held-body", key) == 2


async def test_a_sleep_longer_than_the_limit_suspends(db_url: str, transport: str) -> None:
    harness = await _harness(db_url, transport, sleep_hold_max=timedelta(milliseconds=100))
    try:
        key = new_key()
        await harness.worker([held_v1], concurrency=5)
        handle = await held_v1.start(harness.client, [key, 150])
        await asyncio.wait_for(handle.result(), WAIT.total_seconds())
        assert LEDGER.count("held-body", key) == 2
        assert _statuses(await get_history(harness.http, handle.id)).count("queued") == 2
    finally:
        await harness.close()


async def test_a_held_sleep_survives_the_loss_of_its_worker(aiki: Any) -> None:
    key = new_key()
    first = await worker(workflows=[held_v1], concurrency=5, worker_id=f"held-a-{new_key()}").spawn(aiki.client)
    handle = await held_v1.start(aiki.client, [key, NAP_MS])
    await handle.wait_for_status("sleeping", timeout=WAIT)
    await first.stop(grace=timedelta(0))  # gone mid-sleep, without a word to the server
    await aiki.worker([held_v1], concurrency=5)
    gap, cancelled = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    # The server woke the run a grace period after the sleep's end; another worker replayed it.
    assert gap >= NAP_MS / 1000
    assert cancelled is False
    assert LEDGER.count("held-clock", key) == 1  # the task before the sleep did not run again
    assert LEDGER.count("held-clock", key + "-after") == 1
    assert LEDGER.count("held-body", key) == 2
    # Nothing resumed the sleep for the executor that was gone (over HTTP its parked resume must
    # not outlive its connection, or the run is leased to nobody until the lease expires): the
    # server ended the sleep.
    reasons = [h.get("reason") or "" for h in await get_history(aiki.http, handle.id)]
    assert "sleep ended" in reasons
    assert not [r for r in reasons if "(held by its executor)" in r and "ended" in r], reasons


async def test_a_cancelled_run_does_not_go_on_after_its_held_sleep(aiki: Any) -> None:
    key = new_key()
    w = await worker(workflows=[held_v1], concurrency=5, worker_id=f"held-c-{new_key()}").spawn(aiki.client)
    handle = await held_v1.start(aiki.client, [key, NAP_MS])
    await handle.wait_for_status("sleeping", timeout=WAIT)
    await handle.cancel()
    # Stopping waits for in-flight executions: the held one wakes, is refused (the run moved on)
    # and stops without writing.
    await w.stop(grace=WAIT)
    assert w.in_flight == 0
    assert await handle.status() == "cancelled"
    assert LEDGER.count("held-clock", key + "-after") == 0


async def test_waking_a_held_sleep_ends_it_as_cancelled(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([held_v1], concurrency=5)
    handle = await held_v1.start(aiki.client, [key, 900])
    await handle.wait_for_status("sleeping", timeout=WAIT)
    await handle.wake()
    gap, cancelled = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert cancelled is True  # woken before its end (a sleep that ran out is not cancelled)
    assert gap > 0
    assert LEDGER.count("held-clock", key + "-after") == 1
