"""Values every part of the wire protocol uses: statuses, errors, retry policies, problems."""

from __future__ import annotations

from typing import Literal

import msgspec

RunStatus = Literal[
    "scheduled",
    "queued",
    "running",
    "paused",
    "sleeping",
    "awaiting_event",
    "awaiting_retry",
    "awaiting_child",
    "stalled",
    "completed",
    "failed",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

TaskStatus = Literal["running", "awaiting_retry", "completed", "failed", "discarded"]
ConflictPolicy = Literal["error", "return_existing"]


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    """A failure as recorded in the database: exception type name, message, optional detail."""

    type: str
    message: str
    code: str | None = None
    traceback: str | None = None
    cause: str | None = None


class RetryPolicyWire(msgspec.Struct, omit_defaults=True):
    """A retry policy as it travels (``RetryPolicy`` in the SDK is the public face)."""

    kind: Literal["never", "fixed", "exponential", "jittered"] = "never"
    max_attempts: int = 1
    base_ms: int = 1000
    factor: float = 2.0
    max_delay_ms: int | None = None
    non_retryable: list[str] = msgspec.field(default_factory=list)


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    field: str | None = None
    run_id: str | None = None
