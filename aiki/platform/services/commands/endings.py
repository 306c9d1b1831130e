"""``Complete``, ``Fail``, ``Retry``, ``AwaitTaskRetry``: the executor ends its execution of a run.

``Complete``, ``Fail`` and ``AwaitTaskRetry`` of a top-level run read nothing first: they have a
one-statement shortcut (``ExecutorStore.finish``), which also takes the task record sent just
before them (:func:`record_and_end`), so the hot path's last write is one round trip.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aiki.platform.db.executor_store import ExecutorStore, executor_store
from aiki.platform.domain import run_states
from aiki.platform.domain import values as v
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.commands.fence import check_recorded, task_values
from aiki.platform.services.commands.moves import Held, Move, kind_of, move_held_run
from aiki.platform.services.commands.record import record_task
from aiki.platform.services.context import Services
from aiki.platform.services.rows import encode_error
from aiki.platform.services.rows import run as run_view
from aiki.worker_sdk import protocol as p

Ending = p.Complete | p.Fail | p.AwaitTaskRetry
"""The endings with a one-statement shortcut."""


def _ending(command: Ending, now: int) -> Move:
    """What an ending writes (the same on either path)."""
    if isinstance(command, p.Complete):
        output = msgspec.json.encode(command.output).decode()
        return Move({"output": output, "finished_at": now, "wake_at": None, "deadline_at": None})
    if isinstance(command, p.Fail):
        values = {"error": encode_error(command.error), "finished_at": now, "wake_at": None, "deadline_at": None}
        return Move(values, command.error.message if command.error else None)
    return Move({"wake_at": command.wake_at or now}, "task retry scheduled")


async def end(svc: Services, ns: str, command: Ending) -> v.Transitioned:
    """Apply an ending: in one statement when the store can, else on the general path."""
    done = await _in_one_statement(svc, ns, executor_store(svc.db, ns), command, None)
    if done is not None:
        return done[1]

    async def plan(held: Held) -> Move:
        return _ending(command, held.now)

    return await move_held_run(svc, ns, command, plan)


async def record_and_end(
    svc: Services, ns: str, record: p.RecordTask, command: Ending
) -> tuple[v.TaskRecorded, v.Transitioned | Exception]:
    """A task record and the ending sent right after it, in one statement when the store can.

    Raises the record's refusal (which refuses the ending too); the ending's own refusal is
    returned in its place.
    """
    store = executor_store(svc.db, ns)
    done = await _in_one_statement(svc, ns, store, command, record)
    if done is not None:
        return done
    recorded = await record_task(svc, ns, record)
    try:
        return recorded, await end(svc, ns, command)
    except Exception as exc:  # the record stands; the ending answers for itself
        return recorded, exc


async def _in_one_statement(
    svc: Services, ns: str, store: ExecutorStore, command: Ending, record: p.RecordTask | None
) -> tuple[v.TaskRecorded, v.Transitioned] | None:
    """The ending (after ``record``) by ``ExecutorStore.finish``; None: take the general path."""
    now = now_ms()
    target = run_states.next_status(kind_of(command), "running")
    move = _ending(command, now)
    values: dict[str, Any] = {"updated_at": now, "lease_owner": None, "status": target, **move.values}
    task = task_values(record, now) if record is not None else None
    row = await store.finish(command.run_id, command.revision, values, move.reason, now, task)
    if row is None:
        return None  # fenced (the general path says how), a child run, or a recorded task entry
    recorded = record is None or bool(row["recorded"])
    if not recorded and record is not None:
        # Only the executor holding the revision writes tasks, so the entry that kept this
        # record out was written by this very executor since the statement began.
        await check_recorded(store, record)
    if run_states.is_terminal(target):
        svc.remember_terminal(ns, run_view(row))
    svc.hub.notify(f"run:{command.run_id}")
    if values.get("wake_at") is not None:
        svc.hub.notify("timer")
    return v.TaskRecorded(recorded=recorded), v.Transitioned(status=target, suspended=True)


async def retry(svc: Services, ns: str, command: p.Retry) -> v.Transitioned:
    """The workflow failed and its policy retries it at ``wake_at``: a new attempt."""

    async def plan(held: Held) -> Move:
        attempt = held.run["attempt"]
        # Completed tasks replay in the next attempt; failed ones run again.
        await held.tx.steps.discard_tasks(command.run_id, ["failed"], held.now)
        error = command.error.message if command.error else "error"
        return Move(
            {"error": encode_error(command.error), "wake_at": command.wake_at or held.now, "attempt": attempt + 1},
            f"workflow attempt {attempt} failed: {error}",
        )

    return await move_held_run(svc, ns, command, plan)
