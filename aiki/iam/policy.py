"""Who may do what: the one authorization policy of every API and dashboard route.

A route declares an *action*; :func:`authorize` decides from the principal, the action and the
principal's grant where the action applies (its roles in the organization and namespace). It is
pure: the caller loads the grant. No grant at all means the target does not exist for this
principal (``404``, never ``403``, so ids of other tenants reveal nothing); a grant whose roles
fall short is ``403``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiki.platform.domain.errors import NotFound, PermissionDenied

ORG_ROLES = ("owner", "admin", "member")
NAMESPACE_ROLES = ("admin", "member", "viewer")
KEY_ROLES = ("admin", "worker", "read")

Scope = Literal["public", "user", "organization", "namespace"]

_ALL_NS = frozenset(NAMESPACE_ROLES)
_WRITERS = frozenset({"admin", "member"})
_NS_ADMIN = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Rule:
    """Where an action applies and which roles may take it.

    ``session_roles`` are organization roles for ``organization`` actions and namespace roles for
    ``namespace`` actions; ``key_roles`` are API key roles (keys never act on organizations).
    """

    scope: Scope
    session_roles: frozenset[str] = frozenset()
    key_roles: frozenset[str] = frozenset()
    write: bool = False


def _ns(sessions: frozenset[str], keys: set[str], *, write: bool) -> Rule:
    return Rule("namespace", sessions, frozenset(keys), write)


# Every action a route may declare. Reads are `*:read`; everything else writes.
ACTIONS: dict[str, Rule] = {
    "public": Rule("public"),
    # Any signed-in person, about themselves (profile, logout, their organizations, accept an invitation).
    "user": Rule("user"),
    "org:read": Rule("organization", frozenset(ORG_ROLES)),
    "org:manage": Rule("organization", frozenset({"owner", "admin"}), write=True),
    "invitations:read": Rule("organization", frozenset({"owner", "admin"})),
    "audit:read": Rule("organization", frozenset({"owner", "admin"})),
    "namespace:read": _ns(_ALL_NS, {"admin", "worker", "read"}, write=False),
    "namespace:manage": _ns(_NS_ADMIN, set(), write=True),
    "members:read": _ns(_ALL_NS, set(), write=False),
    "members:manage": _ns(_NS_ADMIN, set(), write=True),
    # No key may create, list or revoke keys: only people who administer the namespace.
    "keys:read": _ns(_NS_ADMIN, set(), write=False),
    "keys:manage": _ns(_NS_ADMIN, set(), write=True),
    "runs:read": _ns(_ALL_NS, {"admin", "worker", "read"}, write=False),
    # Start runs and send events (workers start child runs and signal runs too).
    "runs:write": _ns(_WRITERS, {"admin", "worker"}, write=True),
    # Cancel, pause, resume, wake, requeue: operator actions, audited when a person takes them.
    "runs:manage": _ns(_WRITERS, {"admin"}, write=True),
    # The worker protocol: register, claim, heartbeat, record tasks, transition runs.
    "worker:execute": _ns(frozenset(), {"admin", "worker"}, write=True),
    "workers:read": _ns(_ALL_NS, {"admin", "worker", "read"}, write=False),
    "workflows:read": _ns(_ALL_NS, {"admin", "worker", "read"}, write=False),
    "schedules:read": _ns(_ALL_NS, {"admin", "worker", "read"}, write=False),
    "schedules:write": _ns(_WRITERS, {"admin"}, write=True),
    "endpoints:read": _ns(_ALL_NS, {"admin", "read"}, write=False),
    "endpoints:write": _ns(_NS_ADMIN, {"admin"}, write=True),
}

# Organization roles that administer every namespace of their organization.
_ORG_ADMINS = frozenset({"owner", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a person (by session) or an API key."""

    kind: Literal["user", "api_key"]
    id: str
    label: str
    user_id: str | None = None
    session_id: str | None = None
    key_role: str | None = None
    key_namespace_id: str | None = None
    key_organization_id: str | None = None
    # People only: whether they followed the link mailed to their address (``aiki.iam.verification``).
    email_verified: bool = True

    @property
    def is_user(self) -> bool:
        return self.kind == "user"


@dataclass(frozen=True, slots=True)
class Grant:
    """The principal's standing where an action applies; ``None`` roles mean no membership."""

    organization_id: str
    namespace_id: str | None = None
    org_role: str | None = None
    namespace_role: str | None = None


def rule(action: str) -> Rule:
    try:
        return ACTIONS[action]
    except KeyError:
        raise PermissionDenied(f"unknown action {action!r}") from None


def effective_namespace_role(grant: Grant) -> str | None:
    """Organization owners and admins administer every namespace of their organization."""
    if grant.org_role in _ORG_ADMINS:
        return "admin"
    return grant.namespace_role


def authorize(principal: Principal, action: str, grant: Grant | None) -> None:
    """Raise unless ``principal`` may take ``action`` where ``grant`` was loaded.

    Raises:
        NotFound: the principal has no standing at the target (another tenant's id).
        PermissionDenied: it has, but not a role that allows the action.
    """
    r = rule(action)
    if r.scope == "public":
        return
    if r.scope == "user":
        if not principal.is_user:
            raise PermissionDenied(f"{action!r} needs a signed-in person, not an API key")
        return
    if grant is None:
        raise NotFound("not found")
    if principal.kind == "api_key":
        _authorize_key(principal, action, r, grant)
    elif r.scope == "organization":
        _authorize_org_member(action, r, grant)
    else:
        _authorize_namespace_member(action, r, grant)


def _authorize_key(principal: Principal, action: str, r: Rule, grant: Grant) -> None:
    """An API key acts only in its own namespace, and only with a role the rule lists for keys."""
    if r.scope != "namespace" or grant.namespace_id != principal.key_namespace_id:
        if r.scope == "organization" and grant.organization_id == principal.key_organization_id:
            raise PermissionDenied(f"API keys cannot {action!r}")
        raise NotFound("not found")
    if principal.key_role not in r.key_roles:
        raise PermissionDenied(f"a {principal.key_role!r} key cannot {action!r}")


def _authorize_org_member(action: str, r: Rule, grant: Grant) -> None:
    if grant.org_role is None:
        raise NotFound("not found")
    if grant.org_role not in r.session_roles:
        raise PermissionDenied(f"the {grant.org_role!r} role cannot {action!r} in this organization")


def _authorize_namespace_member(action: str, r: Rule, grant: Grant) -> None:
    role = effective_namespace_role(grant)
    if role is None:
        raise NotFound("not found")
    if role not in r.session_roles:
        raise PermissionDenied(f"the {role!r} role cannot {action!r} in this namespace")
