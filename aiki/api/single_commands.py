"""The single-command routes' bodies as commands: ``POST /runs/{id}/tasks``, ``/transition``, ``/children``.

These routes are thin wrappers over the command dispatcher, kept for HTTP users; the local port's
matching methods use them too. A ``TransitionRequest`` whose ``kind`` lacks a field it needs is a
``validation_error`` naming that field (``$.sleep_name`` ...), as before commands existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiki.api import wire
from aiki.platform.domain import values as v
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.services.commands.dispatch import Answer, apply_commands
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


def record_command(run_id: str, req: p.RecordTaskRequest) -> p.RecordTask:
    return p.RecordTask(
        run_id=run_id,
        revision=req.revision,
        address=req.address,
        seq=req.seq,
        name=req.name,
        status=req.status,
        attempts=req.attempts,
        input=req.input,
        output=req.output,
        error=req.error,
        next_attempt_at=req.next_attempt_at,
    )


def child_command(run_id: str, req: p.StartChildRequest) -> p.StartChild:
    return p.StartChild(
        run_id=run_id,
        revision=req.revision,
        address=req.address,
        seq=req.seq,
        workflow=req.workflow,
        version=req.version,
        input=req.input,
        retry=req.retry,
        reference_id=req.reference_id,
        conflict=req.conflict,
        delay_ms=req.delay_ms,
        pool=req.pool,
        require_registered=req.require_registered,
    )


def _needs(req: p.TransitionRequest, *fields: str) -> list[Any]:
    """The values of ``fields``, which the request's kind needs."""
    for name in fields:
        if getattr(req, name) is None:
            raise InputInvalid(f"a {req.kind!r} transition needs {name!r}", field=f"$.{name}")
    return [getattr(req, name) for name in fields]


def _sleep(run_id: str, req: p.TransitionRequest) -> p.Command:
    name, seq = _needs(req, "sleep_name", "sleep_seq")
    if req.kind == "resume_sleep":
        return p.ResumeSleep(run_id=run_id, revision=req.revision, name=name, seq=seq)
    duration = req.duration_ms or 0
    return p.Sleep(run_id=run_id, revision=req.revision, name=name, seq=seq, duration_ms=duration, hold=req.hold)


def _await_event(run_id: str, req: p.TransitionRequest) -> p.Command:
    event, consumed, wait_seq = _needs(req, "event_name", "consumed", "wait_seq")
    timeout_ms = req.timeout_ms
    return p.AwaitEvent(
        run_id=run_id, revision=req.revision, event=event, wait_seq=wait_seq, consumed=consumed, timeout_ms=timeout_ms
    )


def _await_child(run_id: str, req: p.TransitionRequest) -> p.Command:
    child_run_id, wait_seq = _needs(req, "child_run_id", "wait_seq")
    return p.AwaitChild(
        run_id=run_id, revision=req.revision, child_run_id=child_run_id, wait_seq=wait_seq, timeout_ms=req.timeout_ms
    )


_TRANSITIONS: dict[str, Callable[[str, p.TransitionRequest], p.Command]] = {
    "complete": lambda run_id, r: p.Complete(run_id=run_id, revision=r.revision, output=r.output),
    "fail": lambda run_id, r: p.Fail(run_id=run_id, revision=r.revision, error=r.error),
    "retry": lambda run_id, r: p.Retry(run_id=run_id, revision=r.revision, error=r.error, wake_at=r.wake_at),
    "await_task_retry": lambda run_id, r: p.AwaitTaskRetry(run_id=run_id, revision=r.revision, wake_at=r.wake_at),
    "sleep": _sleep,
    "resume_sleep": _sleep,
    "await_event": _await_event,
    "await_child": _await_child,
    "yield": lambda run_id, r: p.Yield(run_id=run_id, revision=r.revision),
}


def transition_commands(run_id: str, req: p.TransitionRequest) -> list[p.Command]:
    """The transition, after the task record it carries (if any)."""
    transition = _TRANSITIONS[req.kind](run_id, req)
    return [record_command(run_id, req.task), transition] if req.task is not None else [transition]


async def apply_last(svc: Services, ns: str, commands: list[p.Command]) -> Answer:
    """Apply ``commands`` (one request's, limited as a whole) and answer the last one; any
    refusal refuses the request."""
    outcomes = await apply_commands(svc, ns, commands)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    last = outcomes[-1]
    assert not isinstance(last, Exception)
    return last


async def record_task(svc: Services, ns: str, run_id: str, req: p.RecordTaskRequest) -> p.RecordTaskResponse:
    answer = await apply_last(svc, ns, [record_command(run_id, req)])
    assert isinstance(answer, v.TaskRecorded)
    return wire.task_recorded(answer)


async def transition(svc: Services, ns: str, run_id: str, req: p.TransitionRequest) -> p.TransitionResponse:
    answer = await apply_last(svc, ns, transition_commands(run_id, req))
    assert isinstance(answer, v.Transitioned)
    return wire.transitioned(answer)


async def start_child(svc: Services, ns: str, run_id: str, req: p.StartChildRequest) -> p.StartChildResponse:
    answer = await apply_last(svc, ns, [child_command(run_id, req)])
    assert isinstance(answer, v.ChildStarted)
    return wire.child_started(answer)
