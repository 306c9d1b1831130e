"""What IAM services return: plain frozen values (the API serialises them as they are)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    email: str | None
    name: str | None
    created_at: int
    # Whether the person followed a link mailed to ``email`` (or a provider verified it).
    email_verified: bool = False


@dataclass(frozen=True, slots=True)
class OrganizationView:
    id: str
    name: str
    created_at: int
    role: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceView:
    id: str
    organization_id: str
    name: str
    created_at: int
    role: str | None = None


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: str
    email: str | None
    name: str | None
    role: str
    created_at: int


@dataclass(frozen=True, slots=True)
class InvitationView:
    id: str
    organization_id: str
    email: str
    role: str
    namespace_id: str | None
    namespace_role: str | None
    created_at: int
    expires_at: int
    status: str


@dataclass(frozen=True, slots=True)
class CreatedInvitation:
    """A new invitation and its link; the token is shown this once and stored only as an HMAC."""

    invitation: InvitationView
    token: str
    url: str


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: str
    prefix: str
    namespace_id: str
    name: str
    role: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key; ``key`` is shown this once and never again."""

    api_key: ApiKeyView
    key: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    organization_id: str | None
    namespace_id: str | None
    actor_type: str
    actor_id: str | None
    actor_label: str | None
    action: str
    target_type: str | None
    target_id: str | None
    outcome: str
    ip: str | None
    detail: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Me:
    user: UserView
    organizations: list[OrganizationView]


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the user and where they land. The cookie value travels beside it, not in the body."""

    user: UserView
    organization: OrganizationView | None
    namespace: NamespaceView | None
    session_expires_at: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request taken that answers the same whatever it found (sign-up, password reset): see your mail."""

    status: str
    message: str
