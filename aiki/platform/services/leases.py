"""Leases a worker gives back: a stopping worker's runs are queued again at once.

A crashed worker's runs wait for their lease to expire (the timer loop recovers them and counts a
recovery); a worker that stops in an orderly way (``stop()``, SIGTERM) sends ``release`` for the
runs it could not finish, so another worker claims them without waiting out the lease (a pausing
run is released and stays paused, to be queued by its resume).
"""

from __future__ import annotations

from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


async def release(svc: Services, ns: str, req: p.ReleaseRequest) -> list[str]:
    """Queue again the runs ``req.worker_id`` still holds at the revisions it names."""
    held = {r.run_id: r.revision for r in req.runs}
    if not held:
        return []
    now = now_ms()
    async with svc.db.raw_transaction() as conn:
        released = await RunRepository(conn, ns).release(
            req.worker_id, held, f"released by {req.worker_id} (worker stopping)", now
        )
    if released:
        # Claimers waiting in this process look again; PostgreSQL's trigger tells other processes.
        svc.hub.notify(f"ready:{ns}")
        for run_id in released:
            svc.hub.notify(f"run:{run_id}")
    return released
