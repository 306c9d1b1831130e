"""One handler per command kind (for now through the single-request services)."""

from __future__ import annotations

from typing import Any

from aiki.platform.services import children, executions
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p


def record_request(command: p.RecordTask) -> p.RecordTaskRequest:
    return p.RecordTaskRequest(
        revision=command.revision,
        address=command.address,
        seq=command.seq,
        name=command.name,
        status=command.status,
        attempts=command.attempts,
        input=command.input,
        output=command.output,
        error=command.error,
        next_attempt_at=command.next_attempt_at,
    )


def child_request(command: p.StartChild) -> p.StartChildRequest:
    return p.StartChildRequest(
        revision=command.revision,
        address=command.address,
        seq=command.seq,
        workflow=command.workflow,
        version=command.version,
        input=command.input,
        retry=command.retry,
        reference_id=command.reference_id,
        conflict=command.conflict,
        delay_ms=command.delay_ms,
        pool=command.pool,
        require_registered=command.require_registered,
    )


def _transition_fields(command: p.Command) -> dict[str, Any]:
    match command:
        case p.Complete():
            return {"kind": "complete", "output": command.output}
        case p.Fail():
            return {"kind": "fail", "error": command.error}
        case p.Retry():
            return {"kind": "retry", "error": command.error, "wake_at": command.wake_at}
        case p.AwaitTaskRetry():
            return {"kind": "await_task_retry", "wake_at": command.wake_at}
        case p.Sleep():
            return {
                "kind": "sleep",
                "sleep_name": command.name,
                "sleep_seq": command.seq,
                "duration_ms": command.duration_ms,
                "hold": command.hold,
            }
        case p.ResumeSleep():
            return {"kind": "resume_sleep", "sleep_name": command.name, "sleep_seq": command.seq}
        case p.AwaitEvent():
            return {
                "kind": "await_event",
                "event_name": command.event,
                "wait_seq": command.wait_seq,
                "consumed": command.consumed,
                "timeout_ms": command.timeout_ms,
            }
        case p.AwaitChild():
            return {
                "kind": "await_child",
                "child_run_id": command.child_run_id,
                "wait_seq": command.wait_seq,
                "timeout_ms": command.timeout_ms,
            }
        case p.Yield():
            return {"kind": "yield"}
    raise TypeError(f"not a transition: {command!r}")


def transition_request(command: p.Command, task: p.RecordTask | None = None) -> p.TransitionRequest:
    return p.TransitionRequest(
        revision=command.revision,
        task=record_request(task) if task is not None else None,
        **_transition_fields(command),
    )


async def apply(
    svc: Services, ns: str, command: p.Command
) -> p.RecordTaskResponse | p.TransitionResponse | p.StartChildResponse:
    """Apply one command; raises the exception it is refused with."""
    if isinstance(command, p.RecordTask):
        return await executions.record_task(svc, ns, command.run_id, record_request(command))
    if isinstance(command, p.StartChild):
        return await children.start_child(svc, ns, command.run_id, child_request(command))
    return await executions.transition(svc, ns, command.run_id, transition_request(command))


async def record_and_end(
    svc: Services, ns: str, record: p.RecordTask, ending: p.Command
) -> list[p.RecordTaskResponse | p.TransitionResponse | p.StartChildResponse | Exception]:
    """A task record and the ending that follows it, applied together."""
    answer = await executions.transition(svc, ns, ending.run_id, transition_request(ending, record))
    return [p.RecordTaskResponse(recorded=True, paused=answer.status == "paused"), answer]
