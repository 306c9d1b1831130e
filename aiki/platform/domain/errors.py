"""The core's exception tree.

The core never knows an HTTP status: ``aiki.api.errors`` maps each ``code`` to one in a single
table. Every error names the ids it is about so a caller can say what went wrong.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.run_id = run_id


class NotFound(CoreError):
    code = "not_found"


class RunNotFound(NotFound):
    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found", run_id=run_id)


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"

    def __init__(self, workflow: str, version: str) -> None:
        super().__init__(
            f"workflow {workflow!r} version {version!r} is not registered: "
            "start a worker that serves it before starting runs"
        )
        self.workflow = workflow
        self.version = version


class InputInvalid(CoreError):
    """A payload does not match the JSON Schema its workflow version declared."""

    code = "validation_error"


class ReferenceConflict(CoreError):
    code = "reference_conflict"


class StaleRevision(CoreError):
    """An executor wrote with a revision the run has moved past (cancelled, recovered, ...)."""

    code = "stale_revision"

    def __init__(self, run_id: str, revision: int) -> None:
        super().__init__(f"run {run_id!r} is no longer at revision {revision}", run_id=run_id)
        self.revision = revision


class InvalidTransition(CoreError):
    code = "invalid_transition"


class ActionNotAllowed(InvalidTransition):
    """A user action (pause, resume, wake, requeue, cancel) asked of a run whose status does not allow it."""

    code = "action_not_allowed"

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

    code = "task_conflict"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} not found")
        self.schedule_id = schedule_id


OIDC_ERROR_CODES = frozenset(
    {
        "oidc_config_invalid",  # a setting is missing or malformed; ``field`` names it
        "oidc_not_configured",  # this server has no OpenID provider configured
        "oidc_discovery_failed",  # the provider's metadata or keys could not be fetched or read
        "oidc_wrong_issuer",  # metadata or ID token names another issuer than the pinned one
        "oidc_state_mismatch",  # the callback's state is not this session's pending login
        "oidc_expired_login",  # the pending login is older than its time to live
        "oidc_provider_error",  # the provider redirected back with an error (e.g. access_denied)
        "oidc_token_exchange_failed",  # the token endpoint refused the code or could not be reached
        "oidc_invalid_token",  # the ID token is malformed, badly signed or lacks a required claim
        "oidc_wrong_audience",  # the ID token was issued for another client
        "oidc_nonce_mismatch",  # the ID token answers another authorization request
        "oidc_token_expired",  # the ID token's exp has passed (beyond the clock leeway)
        "oidc_email_domain_not_allowed",  # the email's domain is not in the allowed list
        "oidc_email_unverified",  # a verified email is required (domain rule) but not asserted
        "oidc_account_unverified",  # the email belongs to a password account whose owner never verified it
    }
)


class OidcError(CoreError):
    """An OpenID Connect login was refused or could not proceed.

    One class for every reason so callers catch one thing; ``code`` (one of ``OIDC_ERROR_CODES``)
    says which reason, and is stable for tests, logs and the HTTP mapping.
    """

    code = "oidc_error"

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        if code not in OIDC_ERROR_CODES:
            raise ValueError(f"unknown OIDC error code {code!r}")
        super().__init__(message, field=field)
        self.code = code


# -- identity and access ----------------------------------------------------------------------


class Unauthenticated(CoreError):
    """No valid credentials: missing, malformed, unknown, revoked or expired."""

    code = "unauthorized"


class PermissionDenied(CoreError):
    """The caller is known but its role does not allow the action."""

    code = "forbidden"


class LinkInvalid(CoreError):
    """A mailed link (email verification, password reset) is unknown, used, replaced or expired."""

    code = "link_invalid"


class EmailUnverified(PermissionDenied):
    """The signed-in person has not verified their email yet: only "verify your email" is open to them."""

    code = "email_unverified"


class RateLimited(CoreError):
    """Too many attempts or requests; retry after ``retry_after_s`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class AlreadyExists(CoreError):
    """A unique thing (an email, a namespace name, a membership) already exists."""

    code = "already_exists"


class InvitationInvalid(CoreError):
    """An invitation token is unknown, expired, cancelled, used, or meant for another email."""

    code = "invitation_invalid"
