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


class TaskConflict(CoreError):
    """A task entry is already recorded with a different outcome."""

    code = "task_conflict"


# -- identity and access ----------------------------------------------------------------------


class Unauthenticated(CoreError):
    """No valid credentials: missing, malformed, unknown, revoked or expired."""

    code = "unauthorized"


class PermissionDenied(CoreError):
    """The caller is known but its role does not allow the action."""

    code = "forbidden"


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
