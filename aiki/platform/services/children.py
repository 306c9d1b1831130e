"""Run trees: starting a child run, waking a parent when its child ends, and ending runs the
server decides to end (cancel, execution timeout) together with their live descendants.

A child is memoized like a task: it is entry ``seq`` at ``address`` of its parent's replay, and a
unique index on ``(parent_run_id, parent_address, parent_seq)`` means replaying the parent returns
the same child. A parent waiting for a child is ``awaiting_child`` with ``wait_event`` set to
:func:`child_wait_key`; the child's terminal write queues the parent in the same transaction, and a
wait timeout is recorded as a wait-timeout row under that key (like an event wait).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from aiki.platform.db.raw import is_unique_violation
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain import values as v
from aiki.platform.domain.errors import ReferenceConflict, StaleRevision
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.queries import normalize_pool
from aiki.platform.services.commands.fence import fenced_run, pause_requested
from aiki.platform.services.context import Services, check_payload, input_hash, version_or_none
from aiki.platform.services.rows import child_entry, encode_error
from aiki.worker_sdk import protocol as p

_WAIT_PREFIX = "@child:"


def child_wait_key(child_id: str) -> str:
    """The ``wait_event`` (and wait-timeout name) of a parent waiting for ``child_id``.

    Event names are identifiers, so the ``@`` keeps the two apart.
    """
    return _WAIT_PREFIX + child_id


async def start_child(svc: Services, ns: str, req: p.StartChild) -> v.ChildStarted:
    """Start child run ``(address, seq)`` of ``req.run_id``, or return the one already started.

    Fenced by the parent's revision: a stale executor cannot start children. The start options
    mean what they mean for a client start (``runs.start_run``): a delayed child is ``scheduled``,
    its pool defaults to the parent's, and a reference id de-duplicates, within the parent's own
    children only (see :func:`_referenced_child`).
    """
    parent_id = req.run_id
    info = await version_or_none(svc, ns, req.workflow, req.version, req.require_registered)
    if info is not None:
        check_payload(info.input_validator, req.input, "child input")
    pool = normalize_pool(req.pool, "$.pool") if req.pool is not None else None
    now = now_ms()
    delayed = req.delay_ms is not None and req.delay_ms > 0
    try:
        async with svc.db.raw_transaction() as conn:
            runs = RunRepository(conn, ns)
            # The parent's row lock also serializes concurrent starts of the same entry.
            parent = await fenced_run(runs, req)
            if pause_requested(parent):
                # A pause committed before this start: no new child, but the executor still holds
                # the run and stops at this step boundary (its ``yield`` releases the run).
                return v.ChildStarted(paused=True)
            if parent["status"] != "running":
                raise StaleRevision(parent_id, req.revision)
            lease = {"updated_at": now, "wake_at": now + svc.settings.lease_ttl_ms}
            existing = await runs.find_child(parent_id, req.address, req.seq)
            if existing is None and req.reference_id is not None:
                existing = await _referenced_child(runs, parent_id, req)
            if existing is not None:
                await runs.update(parent_id, lease)
                return v.ChildStarted(child=child_entry(existing), created=False)
            child_id = new_id()
            status = run_states.next_status("start_delayed" if delayed else "start", None)
            values: dict[str, Any] = {
                "id": child_id,
                "workflow_name": req.workflow,
                "version": req.version,
                "status": status,
                "revision": 0,
                "attempt": 1,
                "recoveries": 0,
                "max_recoveries": svc.settings.max_recoveries,
                "input": msgspec.json.encode(req.input).decode(),
                "input_hash": input_hash(req.input) if req.reference_id is not None else None,
                "reference_id": req.reference_id,
                "parent_run_id": parent_id,
                "parent_address": req.address,
                "parent_seq": req.seq,
                # Children run in their parent's worker pool unless the start names another.
                "pool": pool if req.pool is not None else parent["pool"],
                "retry": msgspec.json.encode(req.retry).decode() if req.retry is not None else None,
                "timeout_ms": info.timeout_ms if info is not None else None,
                "wake_at": now + req.delay_ms if delayed and req.delay_ms is not None else None,
                "queued_at": None if delayed else now,
                "created_at": now,
                "updated_at": now,
            }
            await runs.insert(values)
            await runs.add_history(
                [
                    {
                        "run_id": child_id,
                        "attempt": 1,
                        "from_status": None,
                        "to_status": status,
                        "reason": f"started by parent {parent_id}",
                        "created_at": now,
                    }
                ]
            )
            await runs.update(parent_id, lease)
    except Exception as exc:
        # Another parent (or a client) took the same reference id at the same moment.
        if req.reference_id is None or not is_unique_violation(exc):
            raise
        raise ReferenceConflict(
            f"reference id {req.reference_id!r} was just taken by another run of {req.workflow}@{req.version}"
        ) from exc
    svc.hub.notify("timer" if delayed else f"ready:{ns}")
    row = {**values, "output": None, "error": None}
    return v.ChildStarted(child=child_entry(row), created=True)


async def _referenced_child(runs: RunRepository, parent_id: str, req: p.StartChild) -> Any | None:
    """The child of ``parent_id`` that ``req.reference_id`` already names, if any.

    A child is memoized by its entry in the parent's replay; a reference id names it across
    entries (and for clients). It cannot name a run outside the parent's children: the parent
    would replay a child it did not start and wait for a run that never wakes it.

    Raises:
        ReferenceConflict: The reference names another run, or a child with another input
            (unless ``conflict="return_existing"``).
    """
    assert req.reference_id is not None
    existing = await runs.find_by_reference(req.workflow, req.version, req.reference_id)
    if existing is None:
        return None
    if existing["parent_run_id"] != parent_id:
        raise ReferenceConflict(
            f"reference id {req.reference_id!r} already names run {existing['id']} of {req.workflow}@{req.version}, "
            f"which is not a child of run {parent_id}: a child cannot take over a run started elsewhere",
            run_id=existing["id"],
        )
    if existing["input_hash"] != input_hash(req.input) and req.conflict != "return_existing":
        raise ReferenceConflict(
            f"reference id {req.reference_id!r} already names child {existing['id']} with a different input",
            run_id=existing["id"],
        )
    return existing


async def end_run(
    runs: RunRepository,
    steps: StepRepository,
    run: Mapping[Any, Any],
    *,
    action: str,
    error: p.ErrorInfo,
    reason: str,
    now: int,
) -> str:
    """Write a terminal status the server decided (``cancel``, ``timeout``); return it.

    Bumps the revision (fencing any executor), clears every deadline, cancels sleeps, discards
    pending task work and appends the history row.
    """
    target = run_states.next_status(action, run["status"])
    await runs.update(
        run["id"],
        {
            "status": target,
            "revision": run["revision"] + 1,
            "error": encode_error(error),
            "wake_at": None,
            "queued_at": None,
            "lease_owner": None,
            "wait_event": None,
            "wait_seq": None,
            "deadline_at": None,
            "resume_at": None,
            "updated_at": now,
            "finished_at": now,
        },
    )
    await steps.finish_sleeps(run["id"], "cancelled")
    await steps.discard_tasks(run["id"], ["awaiting_retry", "running"], now)
    await runs.add_history(
        [
            {
                "run_id": run["id"],
                "attempt": run["attempt"],
                "from_status": run["status"],
                "to_status": target,
                "reason": reason,
                "created_at": now,
            }
        ]
    )
    return target


async def notify_parent(runs: RunRepository, child: Mapping[Any, Any], status: str, now: int) -> str | None:
    """Queue the parent of ``child`` if it waits for it; return the parent id when it was woken."""
    parent_id: str | None = child["parent_run_id"]
    if parent_id is None:
        return None
    woken = await runs.wake_parent(parent_id, child_wait_key(child["id"]), now)
    if woken is None:
        return None
    await runs.add_history(
        [
            {
                "run_id": parent_id,
                "attempt": woken["attempt"],
                "from_status": "awaiting_child",
                "to_status": run_states.next_status("child_ended", "awaiting_child"),
                "reason": f"child {child['id']} {status}",
                "created_at": now,
            }
        ]
    )
    return parent_id


async def cancel_descendants(runs: RunRepository, steps: StepRepository, roots: Sequence[str], now: int) -> list[str]:
    """Cancel every live descendant of ``roots``, level by level; return the ids cancelled.

    Runs entirely on the server: no worker is needed. Descendants of children that already ended
    are visited too (a completed child may have left live children of its own).
    """
    cancelled: list[str] = []
    frontier = list(roots)
    while frontier:
        children = await runs.children_of(frontier, lock=True)
        frontier = [c["id"] for c in children]
        for child in children:
            if child["status"] not in run_states.LIVE:
                continue
            error = p.ErrorInfo(
                type="Cancelled", message=f"parent {child['parent_run_id']} was cancelled", cause="cancelled"
            )
            await end_run(
                runs,
                steps,
                child,
                action="cancel",
                error=error,
                reason=f"parent {child['parent_run_id']} ended",
                now=now,
            )
            cancelled.append(child["id"])
    return cancelled
