"""Schedules: activate (idempotent), read, pause, resume, delete, and fire due occurrences.

Every occurrence starts at most one run, named by the reference id
``schedule:{schedule_id}:{occurrence}``. Firing locks the schedule row (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; SQLite has one writer) and advances ``next_fire_at`` in the same transaction that
inserts the runs, so concurrent server replicas never fire an occurrence twice; the unique
reference id of runs is the final guard.

Catch-up after downtime follows the overlap policy: ``allow`` starts a run for every missed
occurrence (oldest first); ``skip`` and ``cancel_previous`` consider only the latest due one.
A resumed schedule fires from the next occurrence after the resume: the paused period is not
caught up.

Every function reads the time from ``now`` when given, else from ``svc.clock`` when a test set
one, else the wall clock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from aiki.platform.db.errors import is_unique_violation
from aiki.platform.db.raw import RawConn
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.schedules_repo import DueScheduleRepository, ScheduleRepository
from aiki.platform.domain import run_states
from aiki.platform.domain import schedules as rules
from aiki.platform.domain.errors import (
    InputInvalid,
    InvalidTransition,
    ReferenceConflict,
    RunNotFound,
    ScheduleNotFound,
)
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.inspection import ActivatedSchedule, Schedule, SchedulePage
from aiki.platform.domain.queries import normalize_pool
from aiki.platform.services.context import Services, check_payload
from aiki.platform.services.runs import cancel_run
from aiki.worker_sdk import protocol as p

WAKE_KEY = "schedule"
# Due schedules handled per transaction, and runs one `allow` schedule catches up per pass.
_SCHEDULES_PER_PASS = 50
_CATCH_UP_PER_PASS = 50
_MAX_PASSES = 20


def clock_now(svc: Services, now: int | None = None) -> int:
    """``now`` if given, else the services' injected clock, else the wall clock (ms)."""
    if now is not None:
        return now
    return svc.clock() if svc.clock is not None else now_ms()


def _hash(value: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()


def schedule_view(row: Mapping[Any, Any]) -> Schedule:
    return Schedule(
        id=row["id"],
        workflow=row["workflow_name"],
        version=row["version"],
        timezone=row["timezone"],
        overlap=row["overlap"],
        status=row["status"],
        input=row["input"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        cron=row["cron"],
        every_ms=row["every_ms"],
        reference_id=row["reference_id"],
        next_fire_at=row["next_fire_at"],
        last_fire_at=row["last_fire_at"],
        last_run_id=row["last_run_id"],
        retry=row.get("retry") or None,
        pool=row.get("pool"),
    )


def _rule(row: Mapping[Any, Any]) -> rules.Rule:
    return rules.Rule(cron=row["cron"], every_ms=row["every_ms"], timezone=row["timezone"])


def _next_or_none(rule: rules.Rule, after: int) -> int | None:
    try:
        return rules.next_after(rule, after)
    except ValueError:
        return None  # the rule fires no more: the schedule stays, idle


async def activate_schedule(
    svc: Services, ns: str, req: p.ActivateScheduleRequest, *, now: int | None = None
) -> ActivatedSchedule:
    """Create the schedule, or return the one with the same identity (reference id or definition).

    Raises:
        InputInvalid: A bad rule, time zone, overlap policy or input (the error names the field).
        WorkflowNotFound: No worker registered the version.
        ReferenceConflict: The reference id names a schedule with another definition.
    """
    rule = rules.parse_rule(req.cron, req.every_ms, req.timezone)
    if req.overlap not in rules.OVERLAP_POLICIES:
        raise InputInvalid(f"overlap must be one of {', '.join(rules.OVERLAP_POLICIES)}", field="$.overlap")
    info = await svc.version(ns, req.workflow, req.version)
    check_payload(info.input_validator, req.input, "input")
    input_hash = _hash(req.input)
    pool = normalize_pool(req.pool, "$.pool")
    retry = msgspec.json.encode(req.retry).decode() if req.retry is not None else None
    definition: dict[str, Any] = {
        "workflow": req.workflow,
        "version": req.version,
        "input": input_hash,
        "cron": rule.cron,
        "every_ms": rule.every_ms,
        "timezone": rule.timezone,
        "overlap": req.overlap,
    }
    # The run options are part of the definition; left out when unset, so that the identity of
    # a schedule activated without them stays what it was before they existed.
    if pool is not None:
        definition["pool"] = pool
    if req.retry is not None:
        definition["retry"] = msgspec.to_builtins(req.retry)
    definition_hash = _hash(definition)
    identity = f"ref:{req.reference_id}" if req.reference_id is not None else f"def:{definition_hash}"
    at = clock_now(svc, now)
    values: dict[str, Any] = {
        "id": new_id(),
        "identity": identity,
        "reference_id": req.reference_id,
        "definition_hash": definition_hash,
        "workflow_name": req.workflow,
        "version": req.version,
        "input": msgspec.json.encode(req.input).decode(),
        "input_hash": input_hash,
        "cron": rule.cron,
        "every_ms": rule.every_ms,
        "timezone": rule.timezone,
        "overlap": req.overlap,
        "status": "active",
        "next_fire_at": rules.next_after(rule, at),
        "last_fire_at": None,
        "last_run_id": None,
        "created_at": at,
        "updated_at": at,
        "retry": retry,
        "pool": pool,
    }
    for _ in range(3):
        try:
            async with svc.db.raw_transaction() as conn:
                repo = ScheduleRepository(conn, ns)
                existing = await repo.find_by_identity(identity)
                if existing is not None:
                    if existing["definition_hash"] != definition_hash:
                        raise ReferenceConflict(
                            f"reference id {req.reference_id!r} already names schedule {existing['id']} "
                            "with a different definition"
                        )
                    return ActivatedSchedule(schedule=schedule_view(existing), created=False)
                await repo.insert(values)
                await repo.announce()
            break
        except Exception as exc:
            # A concurrent activation of the same identity won: look again.
            if not is_unique_violation(exc):
                raise
    else:  # pragma: no cover - three concurrent losers in a row
        raise ReferenceConflict(f"schedule {identity!r} is being activated concurrently")
    svc.hub.notify(WAKE_KEY)
    return ActivatedSchedule(schedule=schedule_view({**values, "namespace_id": ns}), created=True)


async def get_schedule(svc: Services, ns: str, schedule_id: str) -> Schedule:
    async with svc.db.autocommit() as conn:
        row = await ScheduleRepository(conn, ns).get(schedule_id)
    if row is None:
        raise ScheduleNotFound(schedule_id)
    return schedule_view(row)


async def list_schedules(
    svc: Services,
    ns: str,
    *,
    workflow: str | None = None,
    version: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> SchedulePage:
    async with svc.db.autocommit() as conn:
        rows = await ScheduleRepository(conn, ns).page(
            workflow=workflow, version=version, status=status, after_id=cursor, limit=limit + 1
        )
    items = [schedule_view(r) for r in rows[:limit]]
    return SchedulePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def pause_schedule(svc: Services, ns: str, schedule_id: str, *, now: int | None = None) -> Schedule:
    """Stop firing; runs already started are not touched. Pausing a paused schedule changes nothing."""
    at = clock_now(svc, now)
    async with svc.db.raw_transaction() as conn:
        repo = ScheduleRepository(conn, ns)
        row = await repo.get(schedule_id, lock=True)
        if row is None:
            raise ScheduleNotFound(schedule_id)
        if row["status"] != "paused":
            await repo.update(schedule_id, {"status": "paused", "next_fire_at": None, "updated_at": at})
            row = await repo.get(schedule_id)
    assert row is not None
    return schedule_view(row)


async def resume_schedule(svc: Services, ns: str, schedule_id: str, *, now: int | None = None) -> Schedule:
    """Fire again from the first occurrence after now (the paused period is not caught up)."""
    at = clock_now(svc, now)
    async with svc.db.raw_transaction() as conn:
        repo = ScheduleRepository(conn, ns)
        row = await repo.get(schedule_id, lock=True)
        if row is None:
            raise ScheduleNotFound(schedule_id)
        if row["status"] != "active":
            next_at = _next_or_none(_rule(row), at)
            await repo.update(schedule_id, {"status": "active", "next_fire_at": next_at, "updated_at": at})
            await repo.announce()
            row = await repo.get(schedule_id)
    assert row is not None
    svc.hub.notify(WAKE_KEY)
    return schedule_view(row)


async def delete_schedule(svc: Services, ns: str, schedule_id: str) -> Schedule:
    """Delete the schedule and return it as it was; runs it started are not touched."""
    async with svc.db.raw_transaction() as conn:
        repo = ScheduleRepository(conn, ns)
        row = await repo.get(schedule_id, lock=True)
        if row is None or not await repo.delete(schedule_id):
            raise ScheduleNotFound(schedule_id)
    return schedule_view(row)


async def next_fire_at(svc: Services) -> int | None:
    """The earliest due time of any active schedule, in any namespace."""
    async with svc.db.autocommit() as conn:
        return await DueScheduleRepository(conn).next_fire_at()


@dataclass
class _Pass:
    handled: int = 0
    started: list[tuple[str, str]] = field(default_factory=list)
    to_cancel: list[tuple[str, str, str]] = field(default_factory=list)


async def fire_due(svc: Services, now: int | None = None) -> int:
    """Start the runs of every due occurrence up to ``now``; return how many runs were started.

    ``cancel_previous`` cancels the live previous run through the run service (its own
    transaction) and starts the new run in the next pass, so the order is cancel, then start.
    """
    at = clock_now(svc, now)
    started = 0
    for _ in range(_MAX_PASSES):
        result = await _fire_pass(svc, at)
        started += len(result.started)
        for ns in {ns for ns, _ in result.started}:
            svc.hub.notify(f"ready:{ns}")
        for ns, run_id, reason in result.to_cancel:
            # Another replica may have cancelled it, or the run ended meanwhile: either is fine.
            with contextlib.suppress(InvalidTransition, RunNotFound):
                await cancel_run(svc, ns, run_id, reason)
        if not result.to_cancel and result.handled < _SCHEDULES_PER_PASS:
            break
    return started


async def _fire_pass(svc: Services, now: int) -> _Pass:
    result = _Pass()
    async with svc.db.raw_transaction() as conn:
        due = await DueScheduleRepository(conn).take_due(now, _SCHEDULES_PER_PASS)
        result.handled = len(due)
        for row in due:
            await _fire_one(svc, conn, row, now, result)
    return result


async def _fire_one(svc: Services, conn: RawConn, row: Mapping[str, Any], now: int, result: _Pass) -> None:
    ns = row["namespace_id"]
    schedules = ScheduleRepository(conn, ns)
    rule = _rule(row)
    first_due: int = row["next_fire_at"]
    if row["overlap"] == "allow":
        occurrences = [first_due, *rules.between(rule, first_due, now, _CATCH_UP_PER_PASS - 1)]
        run_id = ""
        for occurrence in occurrences:
            run_id = await _start_occurrence(svc, conn, row, occurrence, now)
            result.started.append((ns, run_id))
        last = occurrences[-1]
        await schedules.update(
            row["id"],
            {
                "next_fire_at": _next_or_none(rule, last),
                "last_fire_at": last,
                "last_run_id": run_id,
                "updated_at": now,
            },
        )
        return
    latest = rules.latest_due(rule, first_due, now)
    occurrence = first_due if latest is None else latest  # never None: first_due <= now
    previous = await _live_previous(conn, ns, row["last_run_id"])
    if previous is not None and row["overlap"] == "cancel_previous":
        reason = f"superseded by schedule {row['id']} occurrence {rules.occurrence_key(occurrence)}"
        result.to_cancel.append((ns, previous, reason))
        return  # fired in the next pass, once the previous run is cancelled
    values: dict[str, Any] = {"next_fire_at": _next_or_none(rule, occurrence), "updated_at": now}
    if previous is None:
        run_id = await _start_occurrence(svc, conn, row, occurrence, now)
        result.started.append((ns, run_id))
        values.update(last_fire_at=occurrence, last_run_id=run_id)
    await schedules.update(row["id"], values)


async def _live_previous(conn: RawConn, ns: str, run_id: str | None) -> str | None:
    if run_id is None:
        return None
    run = await RunRepository(conn, ns).get(run_id)
    if run is None or run_states.is_terminal(run["status"]):
        return None
    return run_id


async def _start_occurrence(
    svc: Services, conn: RawConn, schedule: Mapping[str, Any], occurrence: int, now: int
) -> str:
    """Insert the run of one occurrence (queued now), or find the one already started for it."""
    runs = RunRepository(conn, schedule["namespace_id"])
    reference = rules.run_reference(schedule["id"], occurrence)
    existing = await runs.find_by_reference(schedule["workflow_name"], schedule["version"], reference)
    if existing is not None:
        return str(existing["id"])
    run_id = new_id()
    status = run_states.next_status("start", None)
    await runs.insert(
        {
            "id": run_id,
            "workflow_name": schedule["workflow_name"],
            "version": schedule["version"],
            "status": status,
            "revision": 0,
            "attempt": 1,
            "recoveries": 0,
            "max_recoveries": svc.settings.max_recoveries,
            "input": schedule["input"],
            "input_hash": schedule["input_hash"],
            "reference_id": reference,
            "pool": schedule.get("pool"),
            "retry": schedule.get("retry"),
            "queued_at": now,
            "created_at": now,
            "updated_at": now,
        }
    )
    await runs.add_history(
        [
            {
                "run_id": run_id,
                "attempt": 1,
                "from_status": None,
                "to_status": status,
                "reason": f"started by schedule {schedule['id']} for {rules.occurrence_key(occurrence)}",
                "created_at": now,
            }
        ]
    )
    return run_id
