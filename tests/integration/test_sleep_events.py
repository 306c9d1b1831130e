"""Durable sleep and events: release of the worker, buffering, timeouts, dedupe, no lost wake-up."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from aiki import Run, event, task, workflow

from .helpers import API, LEDGER, WAIT, get_history, get_run, new_key

# ---------------------------------------------------------------------------------------------
# Durable sleep releases the worker
# ---------------------------------------------------------------------------------------------

SLEEP_MS = 2000


@task(name="sleep-after-nap")
async def after_nap(key: str) -> None:
    LEDGER.hit("sleep-after-nap", key)


@task(name="sleep-quick-step")
async def quick_step(key: str) -> str:
    LEDGER.hit("sleep-quick-step", key)
    return "quick"


sleeper_wf = workflow(name="sleep-sleeper")


@sleeper_wf.v("1.0.0")
async def sleeper_v1(run: Run, key: str) -> str:
    await run.sleep(timedelta(milliseconds=SLEEP_MS), name="nap")
    await after_nap.start(run, key)
    return "rested"


quick_wf = workflow(name="sleep-quick")


@quick_wf.v("1.0.0")
async def quick_v1(run: Run, key: str) -> str:
    return await quick_step.start(run, key)


async def test_durable_sleep_releases_the_worker_slot(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([sleeper_v1, quick_v1], concurrency=1)

    sleeper = await sleeper_v1.start(aiki.client, key)
    await sleeper.wait_for_status("sleeping", timeout=WAIT)
    # The worker's only slot is free while the first run sleeps: the second run gets it.
    quick = await quick_v1.start(aiki.client, key)
    await quick.wait_for_status("completed", timeout=WAIT)
    assert await quick.result() == "quick"
    quick_done = (await get_run(aiki.http, quick.id))["finished_at"]

    await sleeper.wait_for_status("completed", timeout=WAIT)
    assert await sleeper.result() == "rested"
    assert LEDGER.count("sleep-after-nap", key) == 1
    # Server timestamps (independent of how loaded the test machine is): the second run finished
    # inside the first run's sleep, and the sleep lasted its full duration.
    history = await get_history(aiki.http, sleeper.id)
    statuses = [h["to_status"] for h in history]
    asleep = statuses.index("sleeping")
    slept_from, slept_until = history[asleep]["created_at"], history[asleep + 1]["created_at"]
    assert slept_from <= quick_done <= slept_until
    assert slept_until - slept_from >= SLEEP_MS - 1


# ---------------------------------------------------------------------------------------------
# Events sent before the wait are buffered, in arrival order
# ---------------------------------------------------------------------------------------------

gated_wf = workflow(name="events-gated")


@gated_wf.v("1.0.0", events={"gate": event(), "item": event()})
async def gated_v1(run: Run, key: str) -> list[Any]:
    await run.events.gate.wait(timeout=timedelta(minutes=5))
    first = await run.events.item.wait(timeout=timedelta(minutes=5))
    second = await run.events.item.wait(timeout=timedelta(minutes=5))
    return [first.data, second.data]


async def test_events_sent_before_the_wait_are_returned_in_arrival_order(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([gated_v1])

    handle = await gated_v1.start(aiki.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)  # waiting on "gate", not "item"
    await handle.events.item.send("first")
    await handle.events.item.send("second")
    await handle.events.gate.send()

    await handle.wait_for_status("completed", timeout=WAIT)
    assert await handle.result() == ["first", "second"]


sleepy_waiter_wf = workflow(name="events-sleepy-waiter")


@sleepy_waiter_wf.v("1.0.0", events={"item": event()})
async def sleepy_waiter_v1(run: Run, key: str) -> list[Any]:
    await run.sleep(timedelta(milliseconds=300), name="before-wait")
    first = await run.events.item.wait(timeout=timedelta(minutes=5))
    second = await run.events.item.wait(timeout=timedelta(minutes=5))
    return [first.data, second.data]


async def test_events_sent_right_after_start_are_buffered_until_the_wait(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([sleepy_waiter_v1])

    handle = await sleepy_waiter_v1.start(aiki.client, key)
    # Sent while the run is queued, running or sleeping: in every case before its first wait.
    await handle.events.item.send({"n": 1})
    await handle.events.item.send({"n": 2})

    await handle.wait_for_status("completed", timeout=WAIT)
    assert await handle.result() == [{"n": 1}, {"n": 2}]


# ---------------------------------------------------------------------------------------------
# Event wait timeout
# ---------------------------------------------------------------------------------------------


@task(name="events-on-timeout")
async def on_timeout(key: str) -> None:
    LEDGER.hit("events-on-timeout", key)


timeout_wf = workflow(name="events-timeout")


@timeout_wf.v("1.0.0", events={"approval": event()})
async def timeout_v1(run: Run, key: str) -> str:
    result = await run.events.approval.wait(timeout=timedelta(milliseconds=100))
    if result.timeout:
        await on_timeout.start(run, key)
        return "timed out"
    return "approved"


async def test_event_wait_times_out_without_an_event(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([timeout_v1])

    started = time.monotonic()
    handle = await timeout_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() == "timed out"
    assert time.monotonic() - started >= 0.1
    assert LEDGER.count("events-on-timeout", key) == 1
    history = await get_history(aiki.http, handle.id)
    assert "awaiting_event" in [h["to_status"] for h in history]


# ---------------------------------------------------------------------------------------------
# Event de-duplication by reference id
# ---------------------------------------------------------------------------------------------

dedupe_wf = workflow(name="events-dedupe")


@dedupe_wf.v("1.0.0", events={"gate": event(), "payment": event()})
async def dedupe_v1(run: Run, key: str) -> list[Any]:
    await run.events.gate.wait(timeout=timedelta(minutes=5))
    seen = []
    for _ in range(2):
        result = await run.events.payment.wait(timeout=timedelta(milliseconds=300))
        seen.append("timeout" if result.timeout else result.data)
    return seen


async def test_event_sent_twice_with_one_reference_id_is_delivered_once(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([dedupe_v1])

    handle = await dedupe_v1.start(aiki.client, key)
    await handle.wait_for_status("awaiting_event", timeout=WAIT)
    first = await handle.events.payment.send("paid", reference_id=f"pay-{key}")
    second = await handle.events.payment.send("paid", reference_id=f"pay-{key}")
    assert first.created is True
    assert second.created is False
    assert second.event_id == first.event_id

    # The same through the HTTP API.
    resp = await aiki.http.post(
        f"{API}/runs/{handle.id}/events/payment", json={"data": "paid", "reference_id": f"pay-{key}"}
    )
    assert resp.status_code in (200, 201), resp.text
    body = resp.json()
    assert body["event_id"] == first.event_id
    assert body["created"] is False

    await handle.events.gate.send()
    await handle.wait_for_status("completed", timeout=WAIT)
    # The workflow saw the payment once; its second wait timed out.
    assert await handle.result() == ["paid", "timeout"]


# ---------------------------------------------------------------------------------------------
# No lost wake-up
# ---------------------------------------------------------------------------------------------

CLIENTS: dict[str, Any] = {}
"""Run key → the SDK client a task uses to send an event to its own run."""


@task(name="events-send-to-self")
async def send_to_self(target: dict[str, str]) -> None:
    key, run_id = target["key"], target["run_id"]
    LEDGER.hit("events-send-to-self", key)
    handle = await self_signal_v1.get_handle(CLIENTS[key], run_id)
    await handle.events.ping.send(f"pong-{key}")


self_signal_wf = workflow(name="events-self-signal")


@self_signal_wf.v("1.0.0", events={"ping": event()})
async def self_signal_v1(run: Run, key: str) -> str:
    # The activation's event list was read at claim time (empty). The task stores the event
    # after that read and before the executor sends its await_event transition.
    await send_to_self.start(run, {"key": key, "run_id": run.id})
    result = await run.events.ping.wait(timeout=timedelta(seconds=30))
    return "timeout" if result.timeout else str(result.data)


async def test_event_arriving_between_read_and_suspend_is_not_lost(aiki: Any) -> None:
    key = new_key()
    CLIENTS[key] = aiki.client
    await aiki.worker([self_signal_v1])

    started = time.monotonic()
    handle = await self_signal_v1.start(aiki.client, key)
    await handle.wait_for_status("completed", timeout=timedelta(seconds=10))

    assert time.monotonic() - started < 10  # far from the wait's 30 s timeout
    assert await handle.result() == f"pong-{key}"
    assert LEDGER.count("events-send-to-self", key) == 1
    run = await get_run(aiki.http, handle.id)
    assert run["status"] == "completed"
