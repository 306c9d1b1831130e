"""The general path of a transition: one transaction that fences the run, asks the command's kind
what to write (its *plan*) and writes it with its history row.

While a pause is requested every transition is taken as a ``yield``: the run is released at this
step boundary and whatever the command asked for waits for the resume (its next execution
replays). A command's one-statement shortcut (PostgreSQL) comes first in its own handler; this
path decides every case the shortcut leaves (paused, a child, fenced ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiki.platform.db.executor_store import Tx, executor_store
from aiki.platform.db.raw import Row
from aiki.platform.domain import run_states
from aiki.platform.domain import values as v
from aiki.platform.domain.errors import StaleRevision
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.children import notify_parent
from aiki.platform.services.commands.fence import fenced_run, pause_requested
from aiki.platform.services.context import Services
from aiki.platform.services.rows import run as run_view
from aiki.worker_sdk import protocol as p


@dataclass
class Move:
    """What a transition writes to the run it moves (``status`` and ``updated_at`` aside)."""

    values: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    keeps_lease: bool = False
    """The executor keeps the run and goes on (a held sleep, a resumed one): answered
    ``suspended=False`` with the revision."""
    held: bool = False
    """A held sleep (answered ``held=True``)."""


@dataclass(frozen=True)
class Held:
    """A run its executor holds, fenced and locked in the general path's transaction."""

    svc: Services
    ns: str
    tx: Tx
    run: Row
    now: int


Plan = Callable[[Held], Awaitable[Move | v.Transitioned]]
"""What a kind writes to a held run, or the answer when it moves nothing (the executor goes on)."""


def kind_of(command: p.Command) -> str:
    """The command's ``kind`` (its tag): the action of the run state machine it is."""
    return str(type(command).__struct_config__.tag)


async def move_held_run(
    svc: Services, ns: str, command: p.Command, plan: Plan, *, held_from: str = "running"
) -> v.Transitioned:
    """Apply ``command`` (``plan``) to its run, held ``held_from`` at the command's revision."""
    now = now_ms()
    kind = kind_of(command)
    notify = [f"run:{command.run_id}"]
    async with executor_store(svc.db, ns).transaction() as tx:
        run = await fenced_run(tx.runs, command)
        if pause_requested(run):
            kind, plan, held_from = "yield", _release_paused, "paused"
        if run["status"] != held_from:
            raise StaleRevision(command.run_id, command.revision)
        move = await plan(Held(svc, ns, tx, run, now))
        if isinstance(move, v.Transitioned):
            return move
        target = run_states.next_status(kind, run["status"])
        values = {"updated_at": now, **({} if move.keeps_lease else {"lease_owner": None}), **move.values}
        values["status"] = target
        await _write(tx, run, values, held_from, move.reason, now)
        if run_states.is_terminal(target) and (parent := await notify_parent(tx.runs, run, target, now)):
            notify += [f"run:{parent}", f"ready:{ns}"]
    if run_states.is_terminal(target):
        svc.remember_terminal(ns, run_view({**run, **values}))
    if values.get("wake_at") is not None:
        notify.append("timer")
    for key in notify:
        svc.hub.notify(key)
    if move.keeps_lease:
        return v.Transitioned(status=target, suspended=False, held=move.held, revision=run["revision"])
    return v.Transitioned(status=target, suspended=True)


async def _write(tx: Tx, run: Row, values: dict[str, Any], held_from: str, reason: str | None, now: int) -> None:
    await tx.runs.update(run["id"], values)
    entry = {
        "run_id": run["id"],
        "attempt": run["attempt"],
        "from_status": held_from,
        "to_status": values["status"],
        "reason": reason,
        "created_at": now,
    }
    await tx.runs.add_history([entry])


async def _release_paused(held: Held) -> Move:
    # The revision moves on: nothing this executor might still send lands.
    return Move(
        values={"revision": held.run["revision"] + 1, "wake_at": None},
        reason="stopped at a step boundary (pause requested)",
    )


async def goes_on(held: Held, **answer: Any) -> v.Transitioned:
    """The run does not suspend (what it waits for is there): its lease is extended, it goes on."""
    await held.tx.runs.update(
        held.run["id"], {"updated_at": held.now, "wake_at": held.now + held.svc.settings.lease_ttl_ms}
    )
    return v.Transitioned(status="running", suspended=False, revision=held.run["revision"], **answer)
