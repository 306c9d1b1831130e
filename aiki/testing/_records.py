"""What a test reads back about a run: its tasks and events, payloads decoded to plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from aiki.worker_sdk.protocol import ErrorInfo, EventDetail, TaskDetail


@dataclass(frozen=True, slots=True)
class TaskCall:
    """One task a run called, as recorded by the server.

    Input and output are the JSON the server stored, decoded to plain Python values (a dataclass
    comes back as a ``dict``), so a test compares them with literals.

    Attributes:
        name: The task's name.
        status: ``completed``, ``failed``, ``awaiting_retry``, ``running`` or ``discarded``
            (dropped by a workflow retry or a cancel).
        attempts: Attempts made so far.
        input: The input the task was called with.
        output: What it returned (None unless completed).
        error: The last attempt's error, if it failed.
        seq: Its position among the calls of the same task with the same input (0 first).
    """

    name: str
    status: str
    attempts: int
    input: Any
    output: Any
    error: ErrorInfo | None
    seq: int

    @classmethod
    def from_detail(cls, detail: TaskDetail) -> TaskCall:
        """The call as a run detail's task entry describes it."""
        return cls(
            name=detail.name,
            status=detail.status,
            attempts=detail.attempts,
            input=msgspec.json.decode(detail.input),
            output=msgspec.json.decode(detail.output),
            error=detail.error,
            seq=detail.seq,
        )


@dataclass(frozen=True, slots=True)
class SentEvent:
    """One event sent to a run, as recorded by the server.

    Attributes:
        name: The event's name.
        data: Its payload, decoded to plain Python values (None if it had none).
        reference_id: The de-duplication key it was sent with, if any.
        seq: Its position among the events of that name sent to the run (0 first).
    """

    name: str
    data: Any
    reference_id: str | None
    seq: int

    @classmethod
    def from_detail(cls, detail: EventDetail) -> SentEvent:
        """The event as a run detail's event entry describes it."""
        data = msgspec.json.decode(detail.data)
        return cls(name=detail.name, data=data, reference_id=detail.reference_id, seq=detail.seq)
