"""User actions on a run besides cancel: pause, resume, wake, requeue.

Each is one transaction on the locked run row, valid only from its statuses
(:func:`run_states.check_action` raises ``ActionNotAllowed`` naming the action and the status):

* ``pause`` (scheduled, queued, running → paused). A run that is not running leaves the ready
  queue (its revision is bumped); a paused delayed start keeps its start time in ``resume_at``.
  A running run is *pausing*: ``paused`` at once, but still leased to its executor (``lease_owner``
  set, revision unchanged), which learns of it at once (``POST /workers/watch``), starts nothing
  new, lets the task under way finish and be recorded, and stops at its next step boundary (the
  ``yield`` transition, or any transition it sends meanwhile: ``services/commands/moves.py``). That
  releases the run and bumps its revision. So pause/resume never runs a side effect twice.
* ``resume`` (paused →) goes back to ``scheduled`` while a delayed start is still in the future,
  else to ``queued`` (the run replays its recorded history when claimed again). A pausing run,
  whose executor has not stopped yet, goes back to ``running``: the executor goes on (should it
  be gone, its lease, renewed here, expires and the run is recovered as usual).
* ``wake`` (sleeping → queued) ends the current sleep early: it is recorded ``cancelled`` and the
  workflow's ``run.sleep()`` returns ``SleepResult(cancelled=True)``.
* ``requeue`` (stalled → queued) puts a stalled run back in the ready queue with a fresh
  ``queued_at``, so the stall sweep gives it another full ``stall_after``.
"""

from __future__ import annotations

from typing import Any

from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.steps_repo import StepRepository
from aiki.platform.domain import run_states
from aiki.platform.domain.errors import RunNotFound
from aiki.platform.domain.ids import now_ms
from aiki.platform.domain.values import Run
from aiki.platform.services.context import Services
from aiki.platform.services.rows import run as run_view

ACTIONS = ("pause", "resume", "wake", "requeue")


async def act(svc: Services, ns: str, run_id: str, action: str, reason: str | None = None) -> Run:
    """Apply user ``action`` (one of :data:`ACTIONS`) to a run and return it as it is now."""
    if action not in ACTIONS:
        raise ValueError(f"unknown run action {action!r}")
    now = now_ms()
    async with svc.db.raw_transaction() as conn:
        runs = RunRepository(conn, ns)
        run = await runs.get(run_id, lock=True)
        if run is None:
            raise RunNotFound(run_id)
        status = run["status"]
        run_states.check_action(action, run_id, status)
        values: dict[str, Any] = {"updated_at": now}
        if action == "pause":
            target = run_states.next_status("pause", status)
            values.update(queued_at=None, resume_at=run["wake_at"] if status == "scheduled" else None)
            if status != "running" or run["lease_owner"] is None:
                # A queued run leaves the ready queue; nothing executes it, nothing to wait for.
                values.update(revision=run["revision"] + 1, lease_owner=None, wake_at=None)
            # else pausing: the executor keeps its lease (``wake_at``, extended as while running)
            # and revision until its next step boundary; if it is lost meanwhile, lease recovery
            # releases the run (it stays paused).
        elif action == "resume":
            resume_at = run["resume_at"]
            if run["lease_owner"] is not None:
                # Pausing: its executor has not stopped yet, and simply goes on.
                target = run_states.next_status("resume_pausing", status)
                values.update(wake_at=now + svc.settings.lease_ttl_ms)
            elif resume_at is not None and resume_at > now:
                target = run_states.next_status("resume_delayed", status)
                values.update(wake_at=resume_at, resume_at=None)
            else:
                target = run_states.next_status("resume", status)
                values.update(queued_at=now, resume_at=None)
        elif action == "wake":
            target = run_states.next_status("wake", status)
            await StepRepository(conn, ns).finish_sleeps(run_id, "cancelled")
            values.update(queued_at=now, wake_at=None)
        else:
            target = run_states.next_status("requeue", status)
            values.update(queued_at=now)
        values["status"] = target
        await runs.update(run_id, values)
        await runs.add_history(
            [
                {
                    "run_id": run_id,
                    "attempt": run["attempt"],
                    "from_status": status,
                    "to_status": target,
                    "reason": reason or action,
                    "created_at": now,
                }
            ]
        )
        row = await runs.get(run_id)
    assert row is not None
    svc.hub.notify(f"run:{run_id}")
    if target == "queued":
        svc.hub.notify(f"ready:{ns}")
    elif target == "scheduled":
        svc.hub.notify("timer")
    return run_view(row)
