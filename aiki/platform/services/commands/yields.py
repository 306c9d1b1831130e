"""``Yield``: a pause was requested and the executor stopped at a step boundary."""

from __future__ import annotations

from aiki.platform.domain import values as v
from aiki.platform.services.commands.moves import Held, move_held_run
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


async def yield_run(svc: Services, ns: str, command: p.Yield) -> v.Transitioned:
    """The paused run is released (the general path takes every transition of a pausing run as a
    yield); one resumed before its executor stopped goes on."""
    return await move_held_run(svc, ns, command, _resumed_meanwhile)


async def _resumed_meanwhile(held: Held) -> v.Transitioned:
    return v.Transitioned(status="running", suspended=False, revision=held.run["revision"])
