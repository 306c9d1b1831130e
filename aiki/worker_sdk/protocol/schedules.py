"""Schedules' wire types, and a stopping worker's release."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiki.worker_sdk.protocol._base import RetryPolicyWire
from aiki.worker_sdk.protocol.workers import HeartbeatRun

OverlapPolicy = Literal["allow", "skip", "cancel_previous"]
ScheduleStatus = Literal["active", "paused"]


class ActivateScheduleRequest(msgspec.Struct, omit_defaults=True):
    """Create a schedule, or find the existing one with the same identity.

    Exactly one of ``cron`` and ``every_ms`` is set. The identity is ``reference_id`` when given,
    otherwise the definition (rule, time zone, overlap policy, workflow version and input).
    """

    workflow: str
    version: str
    input: Any = None
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    overlap: OverlapPolicy = "skip"
    reference_id: str | None = None
    retry: RetryPolicyWire | None = None
    """The workflow retry policy of every run the schedule starts."""
    pool: str | None = None
    """The worker pool of every run the schedule starts (None: the default pool)."""


class ScheduleView(msgspec.Struct, omit_defaults=True):
    """A schedule as the client sees it. ``next_fire_at`` is absent while paused."""

    id: str
    workflow: str
    version: str
    timezone: str
    overlap: OverlapPolicy
    status: ScheduleStatus
    input: msgspec.Raw
    created_at: int
    updated_at: int
    cron: str | None = None
    every_ms: int | None = None
    reference_id: str | None = None
    next_fire_at: int | None = None
    last_fire_at: int | None = None
    last_run_id: str | None = None
    retry: RetryPolicyWire | None = None
    pool: str | None = None


class ActivateScheduleResponse(msgspec.Struct):
    schedule: ScheduleView
    created: bool


class ScheduleListResponse(msgspec.Struct, omit_defaults=True):
    items: list[ScheduleView]
    next_cursor: str | None = None


class ReleaseRequest(msgspec.Struct, omit_defaults=True):
    """A stopping worker hands back the runs it holds (each at the revision it holds)."""

    worker_id: str
    runs: list[HeartbeatRun] = msgspec.field(default_factory=list)


class ReleaseResponse(msgspec.Struct):
    released: list[str]
    """Runs put back in the queue; the others had moved on (ended, suspended, cancelled, recovered)."""
