"""The authorization policy as a table: every action, every kind of principal and role."""

from __future__ import annotations

import pytest

from aiki.iam.policy import ACTIONS, KEY_ROLES, NAMESPACE_ROLES, Grant, Principal, authorize
from aiki.platform.domain.errors import NotFound, PermissionDenied

ORG, NS, OTHER_NS = "org-1", "ns-1", "ns-2"


def person(org_role: str | None, ns_role: str | None) -> tuple[Principal, Grant]:
    p = Principal(kind="user", id="u", label="u@example.com", user_id="u", session_id="s")
    return p, Grant(organization_id=ORG, namespace_id=NS, org_role=org_role, namespace_role=ns_role)


def key(role: str, namespace: str = NS) -> Principal:
    return Principal(
        kind="api_key", id="k", label="aiki_k_", key_role=role, key_namespace_id=namespace, key_organization_id=ORG
    )


def allowed(principal: Principal, action: str, grant: Grant | None) -> bool:
    try:
        authorize(principal, action, grant)
    except (PermissionDenied, NotFound):
        return False
    return True


WRITES = [a for a, r in ACTIONS.items() if r.write]


@pytest.mark.parametrize("action", WRITES)
def test_viewers_and_read_keys_never_write(action: str) -> None:
    p, grant = person("member", "viewer")
    assert not allowed(p, action, grant)
    assert not allowed(key("read"), action, Grant(ORG, NS))


@pytest.mark.parametrize("role", KEY_ROLES)
@pytest.mark.parametrize("action", ["keys:read", "keys:manage", "org:manage", "org:read", "user", "audit:read"])
def test_no_key_manages_keys_organizations_or_people(role: str, action: str) -> None:
    assert not allowed(key(role), action, Grant(ORG, NS))


def test_worker_keys_execute_and_start_runs_but_do_not_manage_them() -> None:
    worker = key("worker")
    grant = Grant(ORG, NS)
    assert allowed(worker, "worker:execute", grant)
    assert allowed(worker, "runs:write", grant)
    assert allowed(worker, "runs:read", grant)
    assert not allowed(worker, "runs:manage", grant)
    assert not allowed(worker, "schedules:write", grant)


def test_people_never_run_the_worker_protocol() -> None:
    p, grant = person("owner", None)
    assert not allowed(p, "worker:execute", grant)


def test_no_grant_is_not_found_and_a_short_role_is_forbidden() -> None:
    p, _ = person(None, None)
    with pytest.raises(NotFound):
        authorize(p, "runs:read", None)
    with pytest.raises(NotFound):
        authorize(p, "runs:read", Grant(ORG, NS, org_role=None, namespace_role=None))
    member_without_namespace = Grant(ORG, NS, org_role="member", namespace_role=None)
    with pytest.raises(NotFound):
        authorize(p, "runs:read", member_without_namespace)
    viewer = Grant(ORG, NS, org_role="member", namespace_role="viewer")
    with pytest.raises(PermissionDenied):
        authorize(p, "runs:manage", viewer)
    with pytest.raises(NotFound):
        authorize(key("admin", OTHER_NS), "runs:read", Grant(ORG, NS))


@pytest.mark.parametrize("org_role", ["owner", "admin"])
def test_organization_admins_administer_every_namespace(org_role: str) -> None:
    p, grant = person(org_role, None)
    for action, rule in ACTIONS.items():
        if rule.scope == "namespace" and "admin" in rule.session_roles:
            assert allowed(p, action, grant), action


@pytest.mark.parametrize("ns_role", NAMESPACE_ROLES)
def test_namespace_roles_read_everything_they_can_see(ns_role: str) -> None:
    p, grant = person("member", ns_role)
    for action in ("runs:read", "namespace:read", "workers:read", "schedules:read", "members:read"):
        assert allowed(p, action, grant)
    assert allowed(p, "runs:write", grant) == (ns_role != "viewer")
    assert allowed(p, "keys:manage", grant) == (ns_role == "admin")
