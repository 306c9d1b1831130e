"""Domain values to wire types: the one place the API maps what the core's services answer
(:mod:`aiki.platform.domain.values`) to the protocol's types.

Each mapping builds the wire Struct straight from the value's fields; stored JSON payloads pass
through as :class:`msgspec.Raw` (never decoded). Routes, the local port and the command results
use it, so the JSON on the wire is the same whichever way a call arrives.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aiki.platform.activation_wire import activation, child_record, error, event_record, payload
from aiki.platform.domain import values as v
from aiki.worker_sdk import protocol as p


def run_view(r: v.Run) -> p.RunView:
    return p.RunView(
        id=r.id,
        workflow=r.workflow,
        version=r.version,
        status=r.status,  # type: ignore[arg-type]
        revision=r.revision,
        attempt=r.attempt,
        created_at=r.created_at,
        updated_at=r.updated_at,
        input=msgspec.Raw(r.input.encode()),
        output=payload(r.output),
        error=error(r.error),
        reference_id=r.reference_id,
        parent_run_id=r.parent_run_id,
        pool=r.pool,
        recoveries=r.recoveries,
        wake_at=r.wake_at,
        finished_at=r.finished_at,
    )


def started_run(s: v.StartedRun) -> p.StartRunResponse:
    return p.StartRunResponse(run=run_view(s.run), created=s.created)


def sent_event(s: v.SentEvent) -> p.SendEventResponse:
    return p.SendEventResponse(event_id=s.event_id, created=s.created)


def history(entries: list[v.HistoryEntry]) -> list[p.HistoryEntry]:
    return [
        p.HistoryEntry(
            id=e.id,
            attempt=e.attempt,
            from_status=e.from_status,
            to_status=e.to_status,
            created_at=e.created_at,
            reason=e.reason,
        )
        for e in entries
    ]


# -- the worker protocol ----------------------------------------------------------------------


def registration(r: v.WorkerRegistration, batch_max_bytes: int | None) -> p.RegisterWorkerResponse:
    return p.RegisterWorkerResponse(
        worker_id=r.worker_id,
        lease_ttl_ms=r.lease_ttl_ms,
        heartbeat_interval_ms=r.heartbeat_interval_ms,
        sleep_hold_max_ms=r.sleep_hold_max_ms,
        payload_max_bytes=r.payload_max_bytes,
        batch_max_bytes=batch_max_bytes,
    )


def claimed(activations: list[v.Activation]) -> p.ClaimResponse:
    return p.ClaimResponse(activations=[activation(a) for a in activations])


def heartbeat(h: v.HeldRuns) -> p.HeartbeatResponse:
    return p.HeartbeatResponse(stale=h.stale, paused=h.paused)


def watch(h: v.HeldRuns) -> p.WatchResponse:
    return p.WatchResponse(stale=h.stale, paused=h.paused)


def released(run_ids: list[str]) -> p.ReleaseResponse:
    return p.ReleaseResponse(released=run_ids)


# -- the answers to executor commands ---------------------------------------------------------


def task_recorded(r: v.TaskRecorded) -> p.RecordTaskResponse:
    return p.RecordTaskResponse(recorded=r.recorded, paused=r.paused)


def transitioned(t: v.Transitioned) -> p.TransitionResponse:
    return p.TransitionResponse(
        status=t.status,  # type: ignore[arg-type]
        suspended=t.suspended,
        held=t.held,
        events=[] if t.events is None else [event_record(e) for e in t.events],
        revision=t.revision,
        child=None if t.child is None else child_record(t.child),
    )


def child_started(c: v.ChildStarted) -> p.StartChildResponse:
    return p.StartChildResponse(
        child=None if c.child is None else child_record(c.child), created=c.created, paused=c.paused
    )


def answer(a: v.TaskRecorded | v.Transitioned | v.ChildStarted) -> Any:
    """A command's answer as its kind's response."""
    if isinstance(a, v.Transitioned):
        return transitioned(a)
    if isinstance(a, v.TaskRecorded):
        return task_recorded(a)
    return child_started(a)
