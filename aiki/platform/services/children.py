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

from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain.errors import RunNotFound, StaleRevision
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.services.context import Services, check_payload
from aiki.platform.services.views import encode_error, error_info, raw
from aiki.worker_sdk import protocol as p

_WAIT_PREFIX = "@child:"


def child_wait_key(child_id: str) -> str:
    """The ``wait_event`` (and wait-timeout name) of a parent waiting for ``child_id``.

    Event names are identifiers, so the ``@`` keeps the two apart.
    """
    return _WAIT_PREFIX + child_id


def child_record(row: Mapping[Any, Any]) -> p.ChildRecord:
    return p.ChildRecord(
        address=row["parent_address"],
        seq=row["parent_seq"],
        run_id=row["id"],
        workflow=row["workflow_name"],
        version=row["version"],
        status=row["status"],
        output=raw(row["output"]),
        error=error_info(row["error"]),
    )


async def start_child(svc: Services, ns: str, parent_id: str, req: p.StartChildRequest) -> p.StartChildResponse:
    """Start child run ``(address, seq)`` of ``parent_id``, or return the one already started.

    Fenced by the parent's revision: a stale executor cannot start children.
    """
    info = await svc.version(ns, req.workflow, req.version)
    check_payload(info.input_validator, req.input, "child input")
    now = now_ms()
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        # The parent's row lock also serializes concurrent starts of the same entry.
        parent = await runs.get(parent_id, lock=True)
        if parent is None:
            raise RunNotFound(parent_id)
        if parent["revision"] != req.revision or parent["status"] != "running":
            raise StaleRevision(parent_id, req.revision)
        lease = {"updated_at": now, "wake_at": now + svc.settings.lease_ttl_ms}
        existing = await runs.find_child(parent_id, req.address, req.seq)
        if existing is not None:
            await runs.update(parent_id, lease)
            return p.StartChildResponse(child=child_record(existing), created=False)
        child_id = new_id()
        status = run_states.next_status("start", None)
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
            "parent_run_id": parent_id,
            "parent_address": req.address,
            "parent_seq": req.seq,
            # Children run in their parent's worker pool.
            "pool": parent["pool"],
            "retry": msgspec.json.encode(req.retry).decode() if req.retry is not None else None,
            "timeout_ms": info.timeout_ms,
            "queued_at": now,
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
    svc.hub.notify(f"ready:{ns}")
    row = {**values, "output": None, "error": None}
    return p.StartChildResponse(child=child_record(row), created=True)


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
