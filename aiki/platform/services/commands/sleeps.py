"""``Sleep`` and ``ResumeSleep``: durable sleeps, and short ones the executor holds.

A held sleep: the executor asked to keep the run while it sleeps and the sleep is short enough
(``sleep_hold_max_ms``). The run is ``sleeping`` but stays leased to its executor, which sends
``ResumeSleep`` at once; the server parks that answer until the sleep's end. Should it never come,
the server wakes the run itself a grace period after the sleep's end.
"""

from __future__ import annotations

from aiki.platform.db.executor_store import executor_store
from aiki.platform.domain import values as v
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.services.commands.moves import Held, Move, move_held_run
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


def _holds(svc: Services, command: p.Sleep, duration_ms: int) -> bool:
    """Whether the server lets the executor hold this sleep (it asked, and it is short enough)."""
    hold_max = svc.settings.sleep_hold_max_ms
    return command.hold and bool(hold_max) and duration_ms <= hold_max


def _answer(held: bool, revision: int) -> v.Transitioned:
    if held:
        return v.Transitioned(status="sleeping", suspended=False, held=True, revision=revision)
    return v.Transitioned(status="sleeping", suspended=True)


async def sleep(svc: Services, ns: str, command: p.Sleep) -> v.Transitioned:
    """Start the sleep: in one statement when the store can, else on the general path."""
    now = now_ms()
    duration = max(0, command.duration_ms)
    held = _holds(svc, command, duration)
    row = {"id": new_id(), "name": command.name, "seq": command.seq, "wake_at": now + duration}
    reason = f"sleeping {command.name!r}" + (" (held by its executor)" if held else "")
    grace = svc.settings.sleep_hold_grace_ms if held else None
    store = executor_store(svc.db, ns)
    if await store.sleep(command.run_id, command.revision, row, grace, reason, now) is not None:
        svc.hub.notify(f"run:{command.run_id}")
        svc.hub.notify("timer")
        return _answer(held, command.revision)
    return await move_held_run(svc, ns, command, lambda h: _start_sleep(h, command))


async def _start_sleep(h: Held, command: p.Sleep) -> Move:
    wake_at = await h.tx.steps.start_sleep(
        new_id(), command.run_id, command.name, command.seq, h.now + max(0, command.duration_ms), h.now
    )
    if not _holds(h.svc, command, wake_at - h.now):
        return Move({"wake_at": wake_at}, f"sleeping {command.name!r}")
    # The executor keeps the run (its lease stands) and resumes it itself; the server steps in
    # only a grace period after the sleep should have ended.
    return Move(
        {"wake_at": wake_at + h.svc.settings.sleep_hold_grace_ms},
        f"sleeping {command.name!r} (held by its executor)",
        keeps_lease=True,
        held=True,
    )


async def resume_sleep(svc: Services, ns: str, command: p.ResumeSleep) -> v.Transitioned:
    """At the sleep's end (at once if the run changed meanwhile), the held run goes on."""
    await _until_held_sleep_ends(svc, ns, command)
    now = now_ms()
    lease_until = now + svc.settings.lease_ttl_ms
    reason = f"sleep {command.name!r} ended (held by its executor)"
    if await executor_store(svc.db, ns).resume_held_sleep(command.run_id, command.revision, lease_until, reason, now):
        svc.hub.notify(f"run:{command.run_id}")
        return v.Transitioned(status="running", suspended=False, revision=command.revision)

    async def plan(h: Held) -> Move:
        await h.tx.steps.finish_sleeps(command.run_id, "completed")
        return Move({"wake_at": h.now + h.svc.settings.lease_ttl_ms}, reason, keeps_lease=True)

    return await move_held_run(svc, ns, command, plan, held_from="sleeping")


async def _until_held_sleep_ends(svc: Services, ns: str, command: p.ResumeSleep) -> None:
    """Park until the sleep's end, or until the run changes (cancel, wake ...).

    The executor sends the resume as soon as the server holds the sleep: the answer then leaves at
    the sleep's end from a server that is already waiting, rather than starting a round trip then.
    """
    key = f"run:{command.run_id}"
    store = executor_store(svc.db, ns)
    while True:
        since = svc.hub.version(key)
        wake_at = await store.sleep_wake_at(command.run_id, command.name, command.seq)
        if wake_at is None:
            return  # not sleeping any more (cancelled, woken, ...): the transition says what happened
        delay_s = (wake_at - now_ms()) / 1000
        if delay_s <= 0 or not await svc.hub.wait(key, since, delay_s):
            return  # the sleep is over
        # The run changed (or another process echoed an earlier change): look again.
