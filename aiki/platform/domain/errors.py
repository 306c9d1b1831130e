"""The core's exception tree.

The core never knows an HTTP status. Every ``code`` is defined once, in the error catalogue
(``aiki.worker_sdk.error_codes``), which also gives each its HTTP status and the SDK its class.
Every error names the ids it is about so a caller can say what went wrong.
"""

from __future__ import annotations

from aiki.worker_sdk import error_codes as codes


class CoreError(Exception):
    """Base of every error the core raises on purpose."""

    code = codes.ERROR

    def __init__(self, message: str, *, field: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.run_id = run_id


class NotFound(CoreError):
    code = codes.NOT_FOUND


class RunNotFound(NotFound):
    code = codes.RUN_NOT_FOUND

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found", run_id=run_id)


class WorkflowNotFound(NotFound):
    code = codes.WORKFLOW_NOT_FOUND

    def __init__(self, workflow: str, version: str) -> None:
        super().__init__(
            f"workflow {workflow!r} version {version!r} is not registered: "
            "start a worker that serves it before starting runs"
        )
        self.workflow = workflow
        self.version = version


class InputInvalid(CoreError):
    """A payload does not match the JSON Schema its workflow version declared."""

    code = codes.VALIDATION_ERROR


class ReferenceConflict(CoreError):
    code = codes.REFERENCE_CONFLICT


class StaleRevision(CoreError):
    """An executor wrote with a revision the run has moved past (cancelled, recovered, ...)."""

    code = codes.STALE_REVISION

    def __init__(self, run_id: str, revision: int) -> None:
        super().__init__(f"run {run_id!r} is no longer at revision {revision}", run_id=run_id)
        self.revision = revision


class InvalidTransition(CoreError):
    code = codes.INVALID_TRANSITION


class ActionNotAllowed(InvalidTransition):
    """A user action (pause, resume, wake, requeue, cancel) asked of a run whose status does not allow it."""

    code = codes.ACTION_NOT_ALLOWED

    def __init__(self, action: str, run_id: str, status: str, valid_from: list[str]) -> None:
        super().__init__(
            f"cannot {action} run {run_id!r}: it is {status} ({action} is valid from: {', '.join(valid_from)})",
            run_id=run_id,
        )
        self.action = action
        self.status = status
        self.valid_from = valid_from


class TaskConflict(CoreError):
    """A task entry is already recorded with a different outcome."""

    code = codes.TASK_CONFLICT


class ScheduleNotFound(NotFound):
    code = codes.SCHEDULE_NOT_FOUND

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} not found")
        self.schedule_id = schedule_id


class EndpointNotFound(NotFound):
    code = codes.ENDPOINT_NOT_FOUND

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"endpoint {endpoint_id!r} not found")
        self.endpoint_id = endpoint_id


class VersionServedElsewhere(CoreError):
    """A version is served by pull workers or by push endpoints in a namespace, never both: the
    other kind already serves it (the message names the version and who serves it)."""

    code = codes.VERSION_SERVED_ELSEWHERE

    def __init__(self, workflow: str, version: str, served_by: str, hint: str) -> None:
        super().__init__(
            f"workflow {workflow!r} version {version!r} is already served by {served_by}: a version is served "
            f"by pull workers or by push endpoints in a namespace, not both ({hint})",
            field="versions",
        )
        self.workflow = workflow
        self.version = version
        self.served_by = served_by


class SecretKeyRequired(CoreError):
    """Push endpoints need the server secret key: their signing secrets are kept sealed under it."""

    code = codes.SECRET_KEY_REQUIRED

    def __init__(self) -> None:
        super().__init__(
            "push endpoints need a server secret key to keep their signing secrets: run the server with "
            "IAM (aiki server) or set AIKI_SECRET_KEY"
        )


# The reasons an OpenID Connect login is refused: the catalogue says what each means.
OIDC_ERROR_CODES = codes.OIDC_CODES


class OidcError(CoreError):
    """An OpenID Connect login was refused or could not proceed.

    One class for every reason so callers catch one thing; ``code`` (one of ``OIDC_ERROR_CODES``)
    says which reason, and is stable for tests, logs and the HTTP mapping.
    """

    code = codes.OIDC_ERROR

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        if code not in OIDC_ERROR_CODES:
            raise ValueError(f"unknown OIDC error code {code!r}")
        super().__init__(message, field=field)
        self.code = code


# -- identity and access ----------------------------------------------------------------------


class Unauthenticated(CoreError):
    """No valid credentials: missing, malformed, unknown, revoked or expired."""

    code = codes.UNAUTHORIZED


class PermissionDenied(CoreError):
    """The caller is known but its role does not allow the action."""

    code = codes.FORBIDDEN


class LinkInvalid(CoreError):
    """A mailed link (email verification, password reset) is unknown, used, replaced or expired."""

    code = codes.LINK_INVALID


class EmailUnverified(PermissionDenied):
    """The signed-in person has not verified their email yet: only "verify your email" is open to them."""

    code = codes.EMAIL_UNVERIFIED


class RateLimited(CoreError):
    """Too many attempts or requests; retry after ``retry_after_s`` seconds."""

    code = codes.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class AlreadyExists(CoreError):
    """A unique thing (an email, a namespace name, a membership) already exists."""

    code = codes.ALREADY_EXISTS


class InvitationInvalid(CoreError):
    """An invitation token is unknown, expired, cancelled, used, or meant for another email."""

    code = codes.INVITATION_INVALID


class EndpointUrlRefused(CoreError):
    """A push endpoint's URL is not one the server will send to (scheme, host, or an address that
    resolves to loopback, private, link-local or metadata space); the message says which."""

    code = codes.VALIDATION_ERROR

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"endpoint URL {url!r} is refused: {reason}", field="url")
        self.reason = reason
