"""Read-side use cases: list and inspect runs, the catalogue, workers; cancel runs in bulk."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from aiki.platform.db.queries_repo import QueryRepository
from aiki.platform.domain import inspection as i
from aiki.platform.domain import run_states
from aiki.platform.domain.errors import InputInvalid, InvalidTransition, RunNotFound
from aiki.platform.domain.ids import now_ms
from aiki.platform.domain.queries import DEFAULT_POOL, RunFilter, decode_cursor, encode_cursor
from aiki.platform.domain.values import HistoryEntry
from aiki.platform.services import runs as run_service
from aiki.platform.services.context import Services
from aiki.platform.services.rows import failure, history_entry
from aiki.platform.services.rows import run as run_view

MAX_CHILDREN = 500
MAX_BULK_CANCEL = 10_000
STALE_AFTER_LEASES = 3
"""A worker is ``stale`` once it missed heartbeats for this many lease TTLs."""

_BULK_PAGE = 500


async def list_runs(svc: Services, ns: str, f: RunFilter, *, cursor: str | None, limit: int) -> i.RunPage:
    """Runs matching ``f``, newest first, one keyset page at a time."""
    before_id = decode_cursor(cursor)
    async with svc.db.autocommit() as conn:
        rows = await QueryRepository(conn, ns).page(f, before_id=before_id, limit=limit + 1)
    items = [run_view(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return i.RunPage(items=items, next_cursor=next_cursor)


async def run_detail(svc: Services, ns: str, run_id: str) -> i.RunDetail:
    async with svc.db.autocommit() as conn:
        repo = QueryRepository(conn, ns)
        run = await repo.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        tasks = await repo.tasks(run_id)
        events = await repo.events(run_id)
        sleeps = await repo.sleeps(run_id)
        timeouts = await repo.wait_timeouts(run_id)
        children = await repo.children(run_id, MAX_CHILDREN + 1)
    return i.RunDetail(
        run=run_view(run),
        tasks=[
            i.TaskDetail(
                id=t["id"],
                name=t["name"],
                address=t["address"],
                seq=t["seq"],
                status=t["status"],
                attempts=t["attempts"],
                input=t["input"],
                output=t["output"],
                error=failure(t["error"]),
                next_attempt_at=t["next_attempt_at"],
                created_at=t["created_at"],
                updated_at=t["updated_at"],
            )
            for t in tasks
        ],
        events=[
            i.EventDetail(
                id=e["id"],
                name=e["name"],
                seq=e["seq"],
                data=e["data"],
                reference_id=e["reference_id"],
                created_at=e["created_at"],
            )
            for e in events
        ],
        sleeps=[
            i.SleepDetail(
                name=s["name"], seq=s["seq"], status=s["status"], wake_at=s["wake_at"], created_at=s["created_at"]
            )
            for s in sleeps
        ],
        wait_timeouts=[i.WaitTimeoutDetail(name=w["name"], seq=w["seq"], created_at=w["created_at"]) for w in timeouts],
        children=[
            i.ChildRun(
                id=c["id"],
                workflow=c["workflow_name"],
                version=c["version"],
                status=c["status"],
                reference_id=c["reference_id"],
                created_at=c["created_at"],
                updated_at=c["updated_at"],
                finished_at=c["finished_at"],
            )
            for c in children[:MAX_CHILDREN]
        ],
        children_truncated=len(children) > MAX_CHILDREN,
    )


async def grouped_history(svc: Services, ns: str, run_id: str) -> i.GroupedHistory:
    """The run's status transitions grouped by workflow attempt, oldest first."""
    async with svc.db.autocommit() as conn:
        repo = QueryRepository(conn, ns)
        if await repo.get_run(run_id) is None:
            raise RunNotFound(run_id)
        rows = await repo.history(run_id)
    groups: dict[int, list[HistoryEntry]] = {}
    for row in rows:
        groups.setdefault(row["attempt"], []).append(history_entry(row))
    attempts = []
    ordered = sorted(groups)
    for index, attempt in enumerate(ordered):
        entries = groups[attempt]
        last = entries[-1]
        # An attempt ends when the run ends, or when the next attempt begins.
        if run_states.is_terminal(last.to_status):
            ended_at: int | None = last.created_at
        elif index + 1 < len(ordered):
            ended_at = groups[ordered[index + 1]][0].created_at
        else:
            ended_at = None
        attempts.append(
            i.AttemptHistory(
                attempt=attempt,
                started_at=entries[0].created_at,
                last_status=last.to_status,
                entries=entries,
                ended_at=ended_at,
            )
        )
    return i.GroupedHistory(run_id=run_id, attempts=attempts)


def _decode_json(text: str, default: Any) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return default


async def list_workers(svc: Services, ns: str) -> list[i.WorkerInfo]:
    """Every worker that registered in the namespace, most recently seen first."""
    async with svc.db.autocommit() as conn:
        repo = QueryRepository(conn, ns)
        rows = await repo.workers()
        leased = await repo.leased_counts()
    stale_before = now_ms() - STALE_AFTER_LEASES * svc.settings.lease_ttl_ms
    items = []
    for row in rows:
        versions = _decode_json(row["versions"], [])
        pools = _decode_json(row["pools"], []) or [DEFAULT_POOL]
        items.append(
            i.WorkerInfo(
                id=row["id"],
                host=row["host"],
                pid=row["pid"],
                versions=[i.ServedVersion(workflow=w, version=v) for w, v in versions],
                pools=pools,
                concurrency=row["concurrency"],
                started_at=row["started_at"],
                last_heartbeat_at=row["last_heartbeat_at"],
                in_flight=leased.get(row["id"], 0),
                status="stale" if row["last_heartbeat_at"] < stale_before else "active",
            )
        )
    return items


async def list_workflows(svc: Services, ns: str) -> list[i.WorkflowSummary]:
    """Every workflow with its versions and their runs counted by status."""
    async with svc.db.autocommit() as conn:
        repo = QueryRepository(conn, ns)
        versions = await repo.versions()
        counts = await repo.run_counts()
    by_version: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in counts:
        by_version[(row["workflow_name"], row["version"])][row["status"]] = int(row["n"])
    registered = {(v["workflow_name"], v["version"]): v for v in versions}
    workflow_created: dict[str, int] = {v["workflow_name"]: v["workflow_created_at"] for v in versions}
    names = sorted({name for name, _ in registered} | {name for name, _ in by_version})
    items = []
    for name in names:
        keys = sorted({k for k in registered if k[0] == name} | {k for k in by_version if k[0] == name})
        summaries = []
        totals: dict[str, int] = defaultdict(int)
        for key in keys:
            version_counts = dict(sorted(by_version.get(key, {}).items()))
            for status, n in version_counts.items():
                totals[status] += n
            version_row = registered.get(key)
            summaries.append(
                i.VersionSummary(
                    version=key[1],
                    run_counts=version_counts,
                    total_runs=sum(version_counts.values()),
                    created_at=version_row["created_at"] if version_row else None,
                    updated_at=version_row["updated_at"] if version_row else None,
                )
            )
        items.append(
            i.WorkflowSummary(
                name=name,
                versions=summaries,
                run_counts=dict(sorted(totals.items())),
                total_runs=sum(totals.values()),
                created_at=workflow_created.get(name),
            )
        )
    return items


async def cancel_runs(svc: Services, ns: str, f: RunFilter, reason: str | None, limit: int) -> i.CancelledRuns:
    """Cancel every live run matching ``f``, each in its own transaction through the cancel use case.

    Runs that end between the match and their cancel are left out of the answer. A matching run
    already cancelled by an earlier cancel of this request (a parent's cascade) is listed: this
    request cancelled it.
    """
    if f.is_empty():
        raise InputInvalid("bulk cancel needs at least one filter", field="filter")
    if not 1 <= limit <= MAX_BULK_CANCEL:
        raise InputInvalid(f"limit: must be between 1 and {MAX_BULK_CANCEL}", field="limit")
    statuses = [s for s in (f.statuses or run_states.LIVE) if s in run_states.LIVE]
    if not statuses:
        return i.CancelledRuns(cancelled=[], truncated=False)
    # Take the matching ids first (newest first, in keyset pages), then cancel them one by one.
    matched: list[str] = []
    before: str | None = None
    want = limit + 1  # one more than allowed tells whether the answer is truncated
    while len(matched) < want:
        size = min(_BULK_PAGE, want - len(matched))
        async with svc.db.autocommit() as conn:
            page = await QueryRepository(conn, ns).live_ids(f, sorted(statuses), before_id=before, limit=size)
        matched.extend(page)
        if len(page) < size:
            break
        before = page[-1]
    cancelled = []
    for run_id in matched[:limit]:
        try:
            view = await run_service.cancel_run(svc, ns, run_id, reason)
        except (RunNotFound, InvalidTransition):
            continue  # it ended (or vanished) after it matched
        if view.status == "cancelled":
            cancelled.append(run_id)
    return i.CancelledRuns(cancelled=cancelled, truncated=len(matched) > limit)
