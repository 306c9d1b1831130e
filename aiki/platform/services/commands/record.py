"""``RecordTask``: record the outcome of one task attempt (once), fenced by revision."""

from __future__ import annotations

from aiki.platform.db.executor_store import executor_store
from aiki.platform.domain import values as v
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.commands.fence import check_recorded, fence_failure, task_values
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


async def record_task(svc: Services, ns: str, command: p.RecordTask) -> v.TaskRecorded:
    """Record the attempt; a run paused while the task ran is still held: its result is recorded
    (a pause never makes a side effect run twice) and the answer says to start nothing new."""
    now = now_ms()
    ttl = svc.settings.lease_ttl_ms
    store = executor_store(svc.db, ns)
    # The lease is extended (for free, with the fence) once less than half of it is left.
    values = task_values(command, now)
    found = await store.record_task(command.run_id, command.revision, values, now + ttl, now + ttl // 2)
    if not found.held:
        raise await fence_failure(store, command.run_id, command.revision)
    if not found.recorded:
        await check_recorded(store, command)
    return v.TaskRecorded(recorded=found.recorded, paused=found.paused)
