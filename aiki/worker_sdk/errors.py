"""The SDK's one exception tree.

Every error derives from :class:`AikiError` and carries a stable class attribute ``code`` (the
same string the server puts in a problem+json ``code`` where one exists) plus the ids it is about
(``run_id``, ``task_name``, ``field`` ...). Catch by class; log or compare by ``code``.

Every code is defined once, in :mod:`aiki.worker_sdk.error_codes`; :data:`PROBLEM_CODES` says which
class each code the server answers with arrives as.

```
AikiError
├── TaskFailedError            task_failed         a task exhausted its retry policy
├── NonDeterminismError        non_determinism     replay diverged from recorded history
├── RunFailedError             run_failed          the awaited run ended failed
├── RunCancelledError          run_cancelled       the awaited run ended cancelled
├── UnexpectedStatusError      unexpected_status   the run ended in another terminal status
├── WaitTimeoutError           wait_timeout        wait_for_status() ran out of time
├── ReferenceConflictError     reference_conflict  reference id already used with other input
├── ValidationError            validation_error    a payload does not fit its type (``field``)
├── MalformedRequestError      malformed_json      the server could not parse the request
├── AuthenticationError        unauthorized        missing, bad, expired or revoked API key
├── PermissionDeniedError      forbidden           the key's role may not do this
│   └── EmailUnverifiedError   email_unverified    the signed-in person has not verified their email
├── NotFoundError              not_found
│   ├── WorkflowNotFoundError  workflow_not_found
│   ├── RunNotFoundError       run_not_found
│   ├── ScheduleNotFoundError  schedule_not_found
│   └── EndpointNotFoundError  endpoint_not_found
├── StaleRevisionError         stale_revision      the executor's revision moved on (fenced)
├── TaskConflictError          task_conflict       a task entry is already recorded with another outcome
├── VersionServedElsewhereError version_served_elsewhere  pull workers and push endpoints both claim a version
├── SecretKeyRequiredError     secret_key_required the server has no secret key (push endpoints need one)
├── AlreadyExistsError         already_exists      a unique thing (email, namespace name ...) exists
├── ConflictError              conflict            the request raced another one and lost: retry
├── InvalidTransitionError     invalid_transition  the run's status does not allow this
│   └── ActionNotAllowedError  action_not_allowed  pause/resume/wake/requeue/cancel from a wrong status
├── PayloadTooLargeError       payload_too_large
├── ServerUnavailableError     server_unavailable  connection error or 5xx: retry later
│   └── RateLimitedError       rate_limited        429: retry after ``retry_after`` seconds
└── UnexpectedResponseError    unexpected_response a response the SDK does not understand
```
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiki.worker_sdk import error_codes as codes
from aiki.worker_sdk.protocol import ErrorInfo


class AikiError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        code: Stable machine-readable identifier of the error class.
        detail: Human-readable explanation (also the exception message).
        run_id: The run the error is about, when there is one.
        status: The HTTP status of the response that caused it, when there is one.
    """

    code: ClassVar[str] = codes.AIKI_ERROR

    def __init__(self, detail: str = "", *, run_id: str | None = None, status: int | None = None) -> None:
        """Build the error.

        Args:
            detail: Human-readable explanation; the code when empty.
            run_id: The run the error is about.
            status: The HTTP status of the response that caused it.
        """
        super().__init__(detail or self.code)
        self.detail = detail or self.code
        self.run_id = run_id
        self.status = status


class TaskFailedError(AikiError):
    """A task failed and its retry policy is spent; raised into the workflow at ``task.start()``.

    Attributes:
        task_name: Name of the failed task.
        error: The recorded failure of the last attempt.
    """

    code = codes.TASK_FAILED

    def __init__(self, task_name: str, error: ErrorInfo, *, run_id: str | None = None) -> None:
        """Build the error.

        Args:
            task_name: Name of the failed task.
            error: The recorded failure of the last attempt.
            run_id: The run the task belongs to.
        """
        super().__init__(f"task {task_name!r} failed: {error.type}: {error.message}", run_id=run_id)
        self.task_name = task_name
        self.error = error


class NonDeterminismError(AikiError):
    """Replay reached new work while recorded task entries were still unconsumed.

    The workflow code no longer matches its history (a task was inserted before recorded work, or a
    task's input changed). The run fails; it is never retried.

    Attributes:
        unconsumed: ``(address, seq, name)`` of every recorded entry the replay did not reach.
        address: The address of the new call that triggered the check.
    """

    code = codes.NON_DETERMINISM

    def __init__(self, unconsumed: list[tuple[str, int, str]], *, address: str = "", run_id: str | None = None) -> None:
        """Build the error.

        Args:
            unconsumed: ``(address, seq, name)`` of every recorded entry the replay did not reach.
            address: The address of the new call that triggered the check.
            run_id: The run being replayed.
        """
        listed = ", ".join(f"{name} ({addr} #{seq})" for addr, seq, name in unconsumed)
        super().__init__(f"new task {address!r} reached while recorded entries are unconsumed: {listed}", run_id=run_id)
        self.unconsumed = unconsumed
        self.address = address


class RunFailedError(AikiError):
    """The run ended with status ``failed``.

    Attributes:
        error: The run's recorded error, if the server returned one.
    """

    code = codes.RUN_FAILED

    def __init__(self, run_id: str, error: ErrorInfo | None) -> None:
        """Build the error.

        Args:
            run_id: The run that failed.
            error: The run's recorded error, if the server returned one.
        """
        msg = f"run {run_id} failed" + (f": {error.type}: {error.message}" if error else "")
        super().__init__(msg, run_id=run_id)
        self.error = error


class RunCancelledError(AikiError):
    """The run ended with status ``cancelled``."""

    code = codes.RUN_CANCELLED

    def __init__(self, run_id: str) -> None:
        """Build the error.

        Args:
            run_id: The run that was cancelled.
        """
        super().__init__(f"run {run_id} was cancelled", run_id=run_id)


class UnexpectedStatusError(AikiError):
    """``wait_for_status()`` saw the run end in a terminal status other than the awaited one.

    Attributes:
        actual: The terminal status reached.
        expected: The statuses that were awaited.
    """

    code = codes.UNEXPECTED_STATUS

    def __init__(self, run_id: str, actual: str, expected: tuple[str, ...]) -> None:
        """Build the error.

        Args:
            run_id: The awaited run.
            actual: The terminal status reached.
            expected: The statuses that were awaited.
        """
        super().__init__(f"run {run_id} ended {actual}, expected {'/'.join(expected)}", run_id=run_id)
        self.actual = actual
        self.expected = expected


class WaitTimeoutError(AikiError):
    """``wait_for_status()`` reached its timeout before the run reached the status.

    Attributes:
        last_status: The run's status when the wait gave up.
    """

    code = codes.WAIT_TIMEOUT

    def __init__(self, run_id: str, last_status: str) -> None:
        """Build the error.

        Args:
            run_id: The awaited run.
            last_status: The run's status when the wait gave up.
        """
        super().__init__(f"timed out waiting for run {run_id} (status {last_status})", run_id=run_id)
        self.last_status = last_status


class ReferenceConflictError(AikiError):
    """A run with this reference id already exists with a different input (``conflict="error"``)."""

    code = codes.REFERENCE_CONFLICT


class ValidationError(AikiError):
    """A payload does not fit its declared type, or a request was refused as invalid.

    Attributes:
        field: Path of the offending field (``user_id``, ``items[0].sku``), when known.
    """

    code = codes.VALIDATION_ERROR

    def __init__(
        self, detail: str, *, field: str | None = None, run_id: str | None = None, status: int | None = None
    ) -> None:
        """Build the error.

        Args:
            detail: Human-readable explanation.
            field: Path of the offending field, when known.
            run_id: The run the error is about.
            status: The HTTP status of the response that caused it.
        """
        super().__init__(detail, run_id=run_id, status=status)
        self.field = field


class MalformedRequestError(AikiError):
    """The server could not parse the request body (400 ``malformed_json``)."""

    code = codes.MALFORMED_JSON


class AuthenticationError(AikiError):
    """The API key is missing, malformed, expired or revoked (401)."""

    code = codes.UNAUTHORIZED


class PermissionDeniedError(AikiError):
    """The caller's role does not allow this action (403)."""

    code = codes.FORBIDDEN


class EmailUnverifiedError(PermissionDeniedError):
    """The signed-in person has not verified their email address yet (403)."""

    code = codes.EMAIL_UNVERIFIED


class NotFoundError(AikiError):
    """The resource does not exist in the caller's namespace (404)."""

    code = codes.NOT_FOUND


class WorkflowNotFoundError(NotFoundError):
    """No worker ever registered this workflow version in the namespace."""

    code = codes.WORKFLOW_NOT_FOUND


class RunNotFoundError(NotFoundError):
    """No such run in the caller's namespace."""

    code = codes.RUN_NOT_FOUND


class ScheduleNotFoundError(NotFoundError):
    """No such schedule in the caller's namespace."""

    code = codes.SCHEDULE_NOT_FOUND


class EndpointNotFoundError(NotFoundError):
    """No such push endpoint in the caller's namespace."""

    code = codes.ENDPOINT_NOT_FOUND


class VersionServedElsewhereError(AikiError):
    """A version is served by pull workers or by push endpoints in a namespace, not both (409).

    Registering a worker for a version an enabled push endpoint serves, or an endpoint for a version
    a live worker serves, is refused; the message names the version and who serves it.
    """

    code = codes.VERSION_SERVED_ELSEWHERE


class SecretKeyRequiredError(AikiError):
    """The server has no secret key, which push endpoints need to keep their signing secrets (409)."""

    code = codes.SECRET_KEY_REQUIRED


class StaleRevisionError(AikiError):
    """The executor's revision of the run is no longer current (409): it must stop writing."""

    code = codes.STALE_REVISION


class TaskConflictError(AikiError):
    """A task entry is already recorded with a different outcome (409); the first one stands."""

    code = codes.TASK_CONFLICT


class AlreadyExistsError(AikiError):
    """A unique thing (an email, a namespace name, a membership) already exists (409)."""

    code = codes.ALREADY_EXISTS


class ConflictError(AikiError):
    """The request raced another one that changed the same thing first (409); it may be retried."""

    code = codes.CONFLICT


class InvalidTransitionError(AikiError):
    """The run's current status does not allow the requested change (e.g. cancel a finished run)."""

    code = codes.INVALID_TRANSITION


class ActionNotAllowedError(InvalidTransitionError):
    """A run action was asked of a run whose status does not allow it (400).

    The action is one of pause, resume, wake, requeue and cancel; the message names it and the
    run's status.
    """

    code = codes.ACTION_NOT_ALLOWED


class PayloadTooLargeError(AikiError):
    """A payload exceeds the server's size limit (413)."""

    code = codes.PAYLOAD_TOO_LARGE


class ServerUnavailableError(AikiError):
    """The server could not be reached or answered 5xx; the request may be retried."""

    code = codes.SERVER_UNAVAILABLE


class RateLimitedError(ServerUnavailableError):
    """Too many requests (429).

    Attributes:
        retry_after: Seconds the server asked to wait, when it said.
    """

    code = codes.RATE_LIMITED

    def __init__(self, detail: str = "", *, retry_after: float | None = None, status: int | None = 429) -> None:
        """Build the error.

        Args:
            detail: Human-readable explanation.
            retry_after: Seconds the server asked to wait, when it said.
            status: The HTTP status of the response (429 unless told).
        """
        super().__init__(detail, status=status)
        self.retry_after = retry_after


class UnexpectedResponseError(AikiError):
    """The server answered something the SDK does not understand.

    Attributes:
        problem_code: The problem+json ``code`` received, if any.
    """

    code = codes.UNEXPECTED_RESPONSE

    def __init__(self, detail: str = "", *, problem_code: str | None = None, **kwargs: Any) -> None:
        """Build the error.

        Args:
            detail: Human-readable explanation.
            problem_code: The problem+json ``code`` received, if any.
            **kwargs: ``run_id`` and ``status``, as for :class:`AikiError`.
        """
        super().__init__(detail, **kwargs)
        self.problem_code = problem_code


_OWN_CODE_CLASSES: tuple[type[AikiError], ...] = (
    ReferenceConflictError,
    MalformedRequestError,
    AuthenticationError,
    PermissionDeniedError,
    EmailUnverifiedError,
    NotFoundError,
    WorkflowNotFoundError,
    RunNotFoundError,
    ScheduleNotFoundError,
    EndpointNotFoundError,
    VersionServedElsewhereError,
    SecretKeyRequiredError,
    StaleRevisionError,
    TaskConflictError,
    AlreadyExistsError,
    ConflictError,
    InvalidTransitionError,
    ActionNotAllowedError,
    PayloadTooLargeError,
    ServerUnavailableError,
)

# Codes that arrive as the class of their HTTP status's meaning: the login flows' refusals, which the
# SDK never drives itself (a 5xx and a 404 arrive as these classes whatever their code).
_BY_STATUS: dict[int, type[AikiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    500: ServerUnavailableError,
    502: ServerUnavailableError,
}
_ARRIVING_BY_STATUS = (codes.LINK_INVALID, codes.INVITATION_INVALID, *sorted(codes.OIDC_CODES))

PROBLEM_CODES: dict[str, type[AikiError]] = {
    **{cls.code: cls for cls in _OWN_CODE_CLASSES},
    **{code: _BY_STATUS[codes.HTTP_STATUS[code]] for code in _ARRIVING_BY_STATUS},
}
"""Problem ``code`` → error class, for every code whose class takes the common constructor."""
