"""Deadlines coming due: delayed starts, sleeps, event timeouts, retries and expired leases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiki.platform.db.runs_repo import DueRunRepository, RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain.ids import new_id
from aiki.platform.services.context import Services
from aiki.platform.services.views import encode_error
from aiki.worker_sdk import protocol as p


async def next_wake_at(svc: Services) -> int | None:
    async with svc.db.raw_read() as conn:
        return await DueRunRepository(conn).next_wake_at()


async def fire_due(svc: Services, now: int, limit: int = 200) -> int:
    """Act on every run whose deadline passed (up to ``limit``); return how many were handled.

    On PostgreSQL the due rows are locked with SKIP LOCKED, so concurrent replicas never fire the
    same deadline twice, and each action re-checks the status it expects.
    """
    ready: set[str] = set()
    changed: list[str] = []
    async with svc.db.raw_transaction() as conn:
        due = await DueRunRepository(conn).take_due(now, limit)
        for run in due:
            ns = run["namespace_id"]
            if await _fire_one(svc, conn, ns, run, now):
                ready.add(ns)
            changed.append(run["id"])
    for ns in ready:
        svc.hub.notify(f"ready:{ns}")
    for run_id in changed:
        svc.hub.notify(f"run:{run_id}")
    return len(due)


async def _fire_one(svc: Services, conn: Any, ns: str, run: Mapping[Any, Any], now: int) -> bool:
    """Handle one due run; True when it became claimable."""
    runs = RunRepository(conn, ns)
    steps = StepRepository(conn, ns)
    status = run["status"]
    values: dict[str, Any] = {"updated_at": now, "wake_at": None}
    if status == "running":
        recoveries = run["recoveries"] + 1
        values.update(revision=run["revision"] + 1, recoveries=recoveries, lease_owner=None)
        if recoveries > run["max_recoveries"]:
            target = run_states.next_status("recovery_exhausted", status)
            error = p.ErrorInfo(
                type="RecoveryExhausted",
                message=(f"the run's worker was lost {recoveries} times (max_recoveries={run['max_recoveries']})"),
                cause="recovery_exhausted",
            )
            values.update(error=encode_error(error), finished_at=now)
            reason = "recovery_exhausted"
        else:
            target = run_states.next_status("lease_expired", status)
            reason = f"lease of {run['lease_owner']} expired (recovery {recoveries})"
    elif status in ("scheduled", "sleeping", "awaiting_event", "awaiting_retry"):
        target = run_states.next_status("due", status)
        reason = {
            "scheduled": "start time reached",
            "sleeping": "sleep ended",
            "awaiting_event": f"wait for event {run['wait_event']!r} timed out",
            "awaiting_retry": "retry due",
        }[status]
        if status == "sleeping":
            await steps.finish_sleeps(run["id"], "completed", due_by=now)
        elif status == "awaiting_event" and run["wait_event"] is not None:
            await steps.add_wait_timeout(new_id(), run["id"], run["wait_event"], run["wait_seq"] or 0, now)
            values.update(wait_event=None, wait_seq=None)
    else:
        # A deadline left on a status that has none (should not happen): clear it.
        await runs.update(run["id"], values)
        return False
    if target == "queued":
        values["queued_at"] = now
    values["status"] = target
    await runs.update(run["id"], values)
    await runs.add_history(
        [
            {
                "run_id": run["id"],
                "attempt": run["attempt"],
                "from_status": status,
                "to_status": target,
                "reason": reason,
                "created_at": now,
            }
        ]
    )
    return target == "queued"
