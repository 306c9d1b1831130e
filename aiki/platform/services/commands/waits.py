"""``AwaitEvent`` and ``AwaitChild``: the run waits, unless what it waits for is already there."""

from __future__ import annotations

from aiki.platform.domain import run_states
from aiki.platform.domain import values as v
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.services.children import child_wait_key
from aiki.platform.services.commands.moves import Held, Move, goes_on, move_held_run
from aiki.platform.services.context import Services
from aiki.platform.services.rows import child_entry, event_entry
from aiki.worker_sdk import protocol as p


async def await_event(svc: Services, ns: str, command: p.AwaitEvent) -> v.Transitioned:
    """Wait for the event; when more than ``consumed`` of them are buffered, answer them instead."""

    async def plan(h: Held) -> Move | v.Transitioned:
        buffered = await h.tx.steps.events_from(command.run_id, command.event, command.consumed)
        if buffered:
            # The event arrived after the executor read the run: it goes on, no suspension.
            return await goes_on(h, events=[event_entry(e) for e in buffered])
        wake_at = h.now + command.timeout_ms if command.timeout_ms is not None else None
        values = {"wait_event": command.event, "wait_seq": command.wait_seq, "wake_at": wake_at}
        return Move(values, f"waiting for event {command.event!r}")

    return await move_held_run(svc, ns, command, plan)


async def await_child(svc: Services, ns: str, command: p.AwaitChild) -> v.Transitioned:
    """Wait for the child to end; a child that already has is answered at once."""

    async def plan(h: Held) -> Move | v.Transitioned:
        child = await h.tx.runs.get(command.child_run_id, lock=True)
        if child is None or child["parent_run_id"] != command.run_id:
            raise InputInvalid(
                f"run {command.child_run_id!r} is not a child of run {command.run_id}", field="$.child_run_id"
            )
        if run_states.is_terminal(child["status"]):
            # The child ended before the parent suspended: it goes on at once.
            return await goes_on(h, child=child_entry(child))
        wake_at = h.now + command.timeout_ms if command.timeout_ms is not None else None
        values = {"wait_event": child_wait_key(child["id"]), "wait_seq": command.wait_seq, "wake_at": wake_at}
        return Move(values, f"waiting for child {child['id']}")

    return await move_held_run(svc, ns, command, plan)
