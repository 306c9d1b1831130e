"""The rules every executor write shares, written once: the fence, the pause, the record-once check.

Every write names the revision its claim returned; a run that moved on (cancelled, recovered by
another worker) answers :class:`StaleRevision` (or :class:`RunNotFound`) and changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aiki.platform.db.executor_store import ExecutorStore
from aiki.platform.db.raw import Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.domain.errors import RunNotFound, StaleRevision, TaskConflict
from aiki.platform.domain.ids import new_id
from aiki.platform.services.rows import encode_error
from aiki.worker_sdk import protocol as p


async def fence_failure(store: ExecutorStore, run_id: str, revision: int) -> StaleRevision | RunNotFound:
    """Why a write fenced by ``revision`` changed nothing: the run moved on, or never was."""
    return StaleRevision(run_id, revision) if await store.exists(run_id) else RunNotFound(run_id)


async def fenced_run(runs: RunRepository, command: p.Command) -> Row:
    """The run ``command`` writes to, locked, at the command's revision (else the error why not)."""
    run = await runs.get(command.run_id, lock=True)
    if run is None:
        raise RunNotFound(command.run_id)
    if run["revision"] != command.revision:
        raise StaleRevision(command.run_id, command.revision)
    return run


def pause_requested(run: Row) -> bool:
    """A pause is requested (the run is paused, still leased to its executor): the executor's next
    write is its step boundary, and whatever a transition asks for waits for the resume."""
    return bool(run["status"] == "paused" and run["lease_owner"] is not None)


def task_values(command: p.RecordTask, now: int) -> dict[str, Any]:
    """The ``tasks`` row a record writes."""
    return {
        "id": new_id(),
        "address": command.address,
        "seq": command.seq,
        "name": command.name,
        "status": command.status,
        "attempts": command.attempts,
        "input": msgspec.json.encode(command.input).decode(),
        "output": msgspec.json.encode(command.output).decode() if command.status == "completed" else None,
        "error": encode_error(command.error),
        "next_attempt_at": command.next_attempt_at,
        "created_at": now,
        "updated_at": now,
    }


async def check_recorded(store: ExecutorStore, command: p.RecordTask) -> None:
    """A task result is recorded once: an entry already holds ``(address, seq)``, which is fine
    only if it is this very outcome (a retried write)."""
    existing = await store.recorded_task(command.run_id, command.address, command.seq)
    if existing is None or existing["status"] != command.status or existing["attempts"] != command.attempts:
        raise TaskConflict(
            f"task {command.name!r} entry {command.address}#{command.seq} is already recorded as "
            f"{existing['status'] if existing else 'missing'}",
            run_id=command.run_id,
        )
