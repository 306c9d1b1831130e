"""Read-side domain values (:mod:`aiki.platform.domain.inspection`) to wire types: run pages and
detail, grouped history, workers, the workflow catalogue, bulk cancel, schedules.

The API's routes and the dashboard map through here (the write path's values: :mod:`aiki.api.wire`).
"""

from __future__ import annotations

import msgspec

from aiki.api.wire import history, run_view
from aiki.platform.activation_wire import error, payload
from aiki.platform.domain import inspection as i
from aiki.worker_sdk import protocol as p

_retry_decoder = msgspec.json.Decoder(p.RetryPolicyWire)


def run_page(page: i.RunPage) -> p.RunListResponse:
    return p.RunListResponse(items=[run_view(r) for r in page.items], next_cursor=page.next_cursor)


def _task(t: i.TaskDetail) -> p.TaskDetail:
    return p.TaskDetail(
        id=t.id,
        name=t.name,
        address=t.address,
        seq=t.seq,
        status=t.status,  # type: ignore[arg-type]
        attempts=t.attempts,
        input=payload(t.input),
        output=payload(t.output),
        error=error(t.error),
        next_attempt_at=t.next_attempt_at,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def _event(e: i.EventDetail) -> p.EventDetail:
    return p.EventDetail(
        id=e.id, name=e.name, seq=e.seq, data=payload(e.data), reference_id=e.reference_id, created_at=e.created_at
    )


def _child(c: i.ChildRun) -> p.ChildRun:
    return p.ChildRun(
        id=c.id,
        workflow=c.workflow,
        version=c.version,
        status=c.status,  # type: ignore[arg-type]
        reference_id=c.reference_id,
        created_at=c.created_at,
        updated_at=c.updated_at,
        finished_at=c.finished_at,
    )


def run_detail(d: i.RunDetail) -> p.RunDetail:
    return p.RunDetail(
        run=run_view(d.run),
        tasks=[_task(t) for t in d.tasks],
        events=[_event(e) for e in d.events],
        sleeps=[
            p.SleepDetail(name=s.name, seq=s.seq, status=s.status, wake_at=s.wake_at, created_at=s.created_at)  # type: ignore[arg-type]
            for s in d.sleeps
        ],
        wait_timeouts=[p.WaitTimeoutDetail(name=w.name, seq=w.seq, created_at=w.created_at) for w in d.wait_timeouts],
        children=[_child(c) for c in d.children],
        children_truncated=d.children_truncated,
    )


def grouped_history(g: i.GroupedHistory) -> p.GroupedHistory:
    return p.GroupedHistory(
        run_id=g.run_id,
        attempts=[
            p.AttemptHistory(
                attempt=a.attempt,
                started_at=a.started_at,
                last_status=a.last_status,
                entries=history(a.entries),
                ended_at=a.ended_at,
            )
            for a in g.attempts
        ],
    )


def workers(items: list[i.WorkerInfo]) -> p.WorkerListResponse:
    return p.WorkerListResponse(
        items=[
            p.WorkerView(
                id=w.id,
                host=w.host,
                pid=w.pid,
                versions=[p.ServedVersion(workflow=s.workflow, version=s.version) for s in w.versions],
                pools=w.pools,
                concurrency=w.concurrency,
                started_at=w.started_at,
                last_heartbeat_at=w.last_heartbeat_at,
                in_flight=w.in_flight,
                status=w.status,  # type: ignore[arg-type]
            )
            for w in items
        ]
    )


def _version(s: i.VersionSummary) -> p.VersionSummary:
    return p.VersionSummary(
        version=s.version,
        run_counts=s.run_counts,
        total_runs=s.total_runs,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def workflows(items: list[i.WorkflowSummary]) -> p.WorkflowListResponse:
    return p.WorkflowListResponse(
        items=[
            p.WorkflowSummary(
                name=w.name,
                versions=[_version(s) for s in w.versions],
                run_counts=w.run_counts,
                total_runs=w.total_runs,
                created_at=w.created_at,
            )
            for w in items
        ]
    )


def cancelled_runs(c: i.CancelledRuns) -> p.CancelRunsResponse:
    return p.CancelRunsResponse(cancelled=c.cancelled, truncated=c.truncated)


def schedule(s: i.Schedule) -> p.ScheduleView:
    return p.ScheduleView(
        id=s.id,
        workflow=s.workflow,
        version=s.version,
        timezone=s.timezone,
        overlap=s.overlap,  # type: ignore[arg-type]
        status=s.status,  # type: ignore[arg-type]
        input=payload(s.input),
        created_at=s.created_at,
        updated_at=s.updated_at,
        cron=s.cron,
        every_ms=s.every_ms,
        reference_id=s.reference_id,
        next_fire_at=s.next_fire_at,
        last_fire_at=s.last_fire_at,
        last_run_id=s.last_run_id,
        retry=_retry_decoder.decode(s.retry) if s.retry else None,
        pool=s.pool,
    )


def activated_schedule(a: i.ActivatedSchedule) -> p.ActivateScheduleResponse:
    return p.ActivateScheduleResponse(schedule=schedule(a.schedule), created=a.created)


def schedule_page(page: i.SchedulePage) -> p.ScheduleListResponse:
    return p.ScheduleListResponse(items=[schedule(s) for s in page.items], next_cursor=page.next_cursor)
