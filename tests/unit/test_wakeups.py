"""WakeHub: a wake-up between a check and a wait is never lost, and notify_all reaches every waiter."""

from __future__ import annotations

import asyncio

from aiki.platform.db.wakeups import WakeHub


async def test_a_notification_after_the_version_read_is_not_lost() -> None:
    hub = WakeHub()
    since = hub.version("run:a")
    hub.notify("run:a")  # lands between the caller's check and its wait
    assert await hub.wait("run:a", since, timeout=0) is True


async def test_wait_times_out_without_a_notification() -> None:
    hub = WakeHub()
    assert await hub.wait("run:a", hub.version("run:a"), timeout=0.01) is False


async def test_notify_wakes_only_its_key() -> None:
    hub = WakeHub()
    a = asyncio.create_task(hub.wait("run:a", hub.version("run:a"), timeout=5))
    b = asyncio.create_task(hub.wait("run:b", hub.version("run:b"), timeout=5))
    await asyncio.sleep(0)
    hub.notify("run:a")
    assert await a is True
    assert not b.done()
    b.cancel()


async def test_notify_all_wakes_every_parked_waiter_and_the_timer() -> None:
    hub = WakeHub()
    keys = ["run:a", "run:b", "ready:ns"]
    waits = [asyncio.create_task(hub.wait(k, hub.version(k), timeout=5)) for k in keys]
    timer_since = hub.version("timer")
    await asyncio.sleep(0)
    hub.notify_all()
    assert await asyncio.gather(*waits) == [True, True, True]
    assert hub.version("timer") != timer_since


async def test_local_notifications_are_forwarded_and_delivered_ones_are_not() -> None:
    hub = WakeHub()
    forwarded: list[str] = []
    hub.add_forwarder(forwarded.append)
    waiter = asyncio.create_task(hub.wait("ready:ns", hub.version("ready:ns"), timeout=5))
    await asyncio.sleep(0)
    assert hub.waiting("ready:ns") == 1
    hub.deliver("ready:ns")  # came from another process: wakes, is not sent back out
    assert await waiter is True
    assert hub.waiting("ready:ns") == 0
    hub.notify_all()
    assert forwarded == []
    hub.notify("run:a")
    assert forwarded == ["run:a"]
    hub.remove_forwarder(forwarded.append)
    hub.notify("run:b")
    assert forwarded == ["run:a"]


async def test_wait_any_wakes_on_any_of_its_keys_and_forgets_all_of_them() -> None:
    hub = WakeHub()
    since = {k: hub.version(k) for k in ("run:a", "run:b", "watch:w")}
    waiter = asyncio.create_task(hub.wait_any(since, timeout=5))
    await asyncio.sleep(0)
    assert [hub.waiting(k) for k in since] == [1, 1, 1]
    hub.deliver("run:b")
    assert await waiter is True
    assert [hub.waiting(k) for k in since] == [0, 0, 0]
    # A notification between the versions' read and the wait is not lost; none at all times out.
    assert await hub.wait_any(since, timeout=0) is True
    assert await hub.wait_any({k: hub.version(k) for k in since}, timeout=0.01) is False
    assert [hub.waiting(k) for k in since] == [0, 0, 0]
