"""Deadlines coming due: delayed starts, sleeps, event and child wait timeouts, retries, expired
leases and execution deadlines; and the stall sweep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiki.platform.db.due_runs_repo import DueRunRepository
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain.ids import new_id
from aiki.platform.services.children import cancel_descendants, end_run, notify_parent
from aiki.platform.services.context import Services
from aiki.platform.services.rows import encode_error
from aiki.worker_sdk import protocol as p


async def next_wake_at(svc: Services, *, leases_from: int = 0) -> int | None:
    async with svc.db.autocommit() as conn:
        return await DueRunRepository(conn).next_wake_at(
            leases_from=leases_from, lease_ttl_ms=svc.settings.lease_ttl_ms
        )


async def fire_due(svc: Services, now: int, limit: int = 200, *, leases_from: int = 0) -> int:
    """Act on every run whose deadline passed (up to ``limit`` of each kind); return how many were handled.

    On PostgreSQL the due rows are locked with SKIP LOCKED, so concurrent replicas never fire the
    same deadline twice, and each action re-checks the status it expects.

    Leases expire only from ``leases_from`` on (the timer loop sets it one lease TTL after the
    database became reachable again) and, on PostgreSQL, once the database server has been up for
    a lease TTL: a worker cannot heartbeat while the database is down, and its finished tasks must
    not run again because of the server's own outage.
    """
    ready: set[str] = set()
    changed: list[str] = []
    # Sleeps, the most common deadline, end in one autocommitted statement where the store has one,
    # and their runs are announced before the general pass below: a sleeper's overshoot is one round trip.
    async with svc.db.autocommit() as conn:
        woken = await DueRunRepository(conn).end_due_sleeps(now, limit, run_states.next_status("due", "sleeping"))
    for run in woken:
        svc.hub.notify(f"ready:{run['namespace_id']}")
        svc.hub.notify(f"run:{run['id']}")
    async with svc.db.raw_transaction() as conn:
        expired = await DueRunRepository(conn).take_expired(now, limit)
        for run in expired:
            ns = run["namespace_id"]
            changed.extend(await _expire_one(conn, ns, run, now))
            ready.add(ns)
        due = await DueRunRepository(conn).take_due(
            now, limit, leases_from=leases_from, lease_ttl_ms=svc.settings.lease_ttl_ms
        )
        for run in due:
            ns = run["namespace_id"]
            if await _fire_one(svc, conn, ns, run, now):
                ready.add(ns)
            changed.append(run["id"])
    for ns in ready:
        svc.hub.notify(f"ready:{ns}")
    for run_id in changed:
        svc.hub.notify(f"run:{run_id}")
    return max(len(due), len(expired), len(woken))


async def _expire_one(conn: Any, ns: str, run: Mapping[Any, Any], now: int) -> list[str]:
    """Fail a run past its execution deadline in whatever status it is: a hung or lost worker
    cannot hold it. Its live descendants are cancelled and a parent waiting for it is woken.

    Returns the ids of the runs changed.
    """
    runs = RunRepository(conn, ns)
    if run["status"] not in run_states.TRANSITIONS["timeout"]:
        # An ended run with a deadline left over: clear it.
        await runs.update(run["id"], {"deadline_at": None})
        return []
    limit_ms = run["timeout_ms"]
    error = p.ErrorInfo(
        type="RunTimeout",
        message=(
            f"the run exceeded its execution time limit of {limit_ms} ms"
            if limit_ms is not None
            else "the run exceeded its execution deadline"
        ),
        cause="timeout",
    )
    steps = StepRepository(conn, ns)
    await end_run(runs, steps, run, action="timeout", error=error, reason="execution timeout", now=now)
    changed = [run["id"], *await cancel_descendants(runs, steps, [run["id"]], now)]
    parent = await notify_parent(runs, run, "failed", now)
    if parent is not None:
        changed.append(parent)
    return changed


async def stall_sweep(svc: Services, now: int, limit: int = 500) -> int:
    """Move runs queued for longer than ``stall_after_ms`` without a claim to ``stalled``."""
    async with svc.db.raw_transaction() as conn:
        stalled = await DueRunRepository(conn).stall(now - svc.settings.stall_after_ms, now, limit)
        by_ns: dict[str, list[Mapping[Any, Any]]] = {}
        for row in stalled:
            by_ns.setdefault(row["namespace_id"], []).append(row)
        reason = f"not claimed within {svc.settings.stall_after_ms} ms (does a worker serve its version?)"
        target = run_states.next_status("stall", "queued")
        for ns, rows in by_ns.items():
            entries = [
                {
                    "run_id": r["id"],
                    "attempt": r["attempt"],
                    "from_status": "queued",
                    "to_status": target,
                    "reason": reason,
                    "created_at": now,
                }
                for r in rows
            ]
            await RunRepository(conn, ns).add_history(entries)
    for row in stalled:
        svc.hub.notify(f"run:{row['id']}")
    return len(stalled)


async def _fire_one(svc: Services, conn: Any, ns: str, run: Mapping[Any, Any], now: int) -> bool:
    """Handle one due run; True when it (or its parent) became claimable."""
    runs = RunRepository(conn, ns)
    steps = StepRepository(conn, ns)
    status = run["status"]
    values: dict[str, Any] = {"updated_at": now, "wake_at": None}
    if status == "running" or (status == "paused" and run["lease_owner"] is not None):
        # A pausing run's executor was lost before its step boundary: as for a running run, the
        # lease is dropped, the revision bumped and a recovery counted; it stays paused (resume
        # queues it).
        recoveries = run["recoveries"] + 1
        values.update(revision=run["revision"] + 1, recoveries=recoveries, lease_owner=None)
        if recoveries > run["max_recoveries"]:
            target = run_states.next_status("recovery_exhausted", status)
            error = p.ErrorInfo(
                type="RecoveryExhausted",
                message=(f"the run's worker was lost {recoveries} times (max_recoveries={run['max_recoveries']})"),
                cause="recovery_exhausted",
            )
            values.update(error=encode_error(error), finished_at=now, deadline_at=None)
            reason = "recovery_exhausted"
        else:
            target = run_states.next_status("lease_expired", status)
            pausing = " while pausing" if status == "paused" else ""
            reason = f"lease of {run['lease_owner']} expired{pausing} (recovery {recoveries})"
    elif status in ("scheduled", "sleeping", "awaiting_event", "awaiting_retry", "awaiting_child"):
        target = run_states.next_status("due", status)
        reason = {
            "scheduled": "start time reached",
            "sleeping": "sleep ended",
            "awaiting_event": f"wait for event {run['wait_event']!r} timed out",
            "awaiting_retry": "retry due",
            "awaiting_child": f"wait for child {(run['wait_event'] or '').removeprefix('@child:')} timed out",
        }[status]
        if status == "sleeping":
            await steps.finish_sleeps(run["id"], "completed", due_by=now)
        elif status in ("awaiting_event", "awaiting_child") and run["wait_event"] is not None:
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
    if target == "failed":
        # A parent waiting for this run is queued: report its namespace as ready.
        return await notify_parent(runs, run, target, now) is not None
    return target == "queued"
