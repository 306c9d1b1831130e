"""The Aiki worker SDK: define workflows and tasks, start and drive runs, execute them in workers.

Only ``aiohttp``, ``httpx`` and ``msgspec`` (and the standard library) are imported, so a worker host stays
light.

The names below are the SDK's public API; import them from here (or from ``aiki``). They live in
the public modules ``client``, ``definitions``, ``endpoint``, ``errors``, ``retry``, ``run``, ``schedules``,
``serde``, ``tasks`` and ``worker``; the engine that executes runs (``execution`` and the private
``_*`` modules) is not part of the API.
"""

from aiki.worker_sdk.client import Client, EventSender, RunHandle, client
from aiki.worker_sdk.definitions import (
    EventDefinition,
    StartOptions,
    Workflow,
    WorkflowVersion,
    event,
    workflow,
)
from aiki.worker_sdk.endpoint import Endpoint, endpoint
from aiki.worker_sdk.errors import (
    ActionNotAllowedError,
    AikiError,
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    EmailUnverifiedError,
    InvalidTransitionError,
    MalformedRequestError,
    NonDeterminismError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ReferenceConflictError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    ServerUnavailableError,
    StaleRevisionError,
    TaskConflictError,
    TaskFailedError,
    UnexpectedResponseError,
    UnexpectedStatusError,
    ValidationError,
    WaitTimeoutError,
    WorkflowNotFoundError,
)
from aiki.worker_sdk.retry import RetryPolicy
from aiki.worker_sdk.run import ChildHandle, ChildResult, EventResult, EventWaiter, Run, SleepResult
from aiki.worker_sdk.schedules import Schedule, ScheduleHandle, schedule
from aiki.worker_sdk.serde import json_schema
from aiki.worker_sdk.tasks import Task, task
from aiki.worker_sdk.worker import Worker, WorkerHandle, worker

__all__ = [
    "ActionNotAllowedError",
    "AikiError",
    "AlreadyExistsError",
    "AuthenticationError",
    "ChildHandle",
    "ChildResult",
    "Client",
    "ConflictError",
    "EmailUnverifiedError",
    "Endpoint",
    "EventDefinition",
    "EventResult",
    "EventSender",
    "EventWaiter",
    "InvalidTransitionError",
    "MalformedRequestError",
    "NonDeterminismError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ReferenceConflictError",
    "RetryPolicy",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "Schedule",
    "ScheduleHandle",
    "ScheduleNotFoundError",
    "ServerUnavailableError",
    "SleepResult",
    "StaleRevisionError",
    "StartOptions",
    "Task",
    "TaskConflictError",
    "TaskFailedError",
    "UnexpectedResponseError",
    "UnexpectedStatusError",
    "ValidationError",
    "WaitTimeoutError",
    "Worker",
    "WorkerHandle",
    "Workflow",
    "WorkflowNotFoundError",
    "WorkflowVersion",
    "client",
    "endpoint",
    "event",
    "json_schema",
    "schedule",
    "task",
    "worker",
    "workflow",
]
