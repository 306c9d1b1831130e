"""Organizations and their members, namespaces and namespace members (invitations: ``aiki.iam.invitations``).

Callers are authorized before these run (``policy.authorize``); the rules here are the ones a
role table cannot say: only an owner makes or unmakes an owner, and an organization keeps one.
"""

from __future__ import annotations

from typing import Any

from aiki.iam import audit
from aiki.iam.context import Iam
from aiki.iam.models import (
    MemberView,
    NamespaceView,
    OrganizationView,
)
from aiki.iam.policy import NAMESPACE_ROLES, ORG_ROLES, Grant, Principal, effective_namespace_role
from aiki.iam.repos import (
    NamespaceDirectory,
    NamespaceMemberRepository,
    OrganizationRepository,
    Row,
)
from aiki.platform.db.raw import is_unique_violation
from aiki.platform.domain.errors import (
    AlreadyExists,
    InputInvalid,
    NotFound,
    PermissionDenied,
)
from aiki.platform.domain.ids import new_id

_NAME_MAX = 100


def check_role(role: str, allowed: tuple[str, ...], field: str) -> None:
    """Refuse a role that is not one of ``allowed`` (``field`` names where it was given)."""
    if role not in allowed:
        raise InputInvalid(f"role {role!r} is not one of {', '.join(allowed)}", field=field)


def _check_name(name: str, field: str = "$.name") -> str:
    value = name.strip()
    if not value or len(value) > _NAME_MAX:
        raise InputInvalid(f"name must be 1 to {_NAME_MAX} characters", field=field)
    return value


# -- organizations ------------------------------------------------------------------------------


async def create_organization(iam: Iam, principal: Principal, name: str, ip: str | None) -> OrganizationView:
    assert principal.user_id is not None
    now = iam.now()
    org: dict[str, Any] = {"id": new_id(), "name": _check_name(name), "created_at": now}
    async with iam.db.transaction() as conn:
        orgs = OrganizationRepository(conn)
        await orgs.insert(org)
        await orgs.add_member(org["id"], principal.user_id, "owner", now)
        await NamespaceDirectory(conn).insert(
            {"id": new_id(), "organization_id": org["id"], "name": "default", "created_at": now}
        )
        await audit.record(
            iam,
            principal,
            "organization.create",
            conn=conn,
            organization_id=org["id"],
            target_type="organization",
            target_id=org["id"],
            ip=ip,
        )
    return OrganizationView(id=org["id"], name=org["name"], created_at=now, role="owner")


async def list_organizations(iam: Iam, principal: Principal) -> list[OrganizationView]:
    assert principal.user_id is not None
    async with iam.db.engine.connect() as conn:
        return [OrganizationView(**r) for r in await OrganizationRepository(conn).of_user(principal.user_id)]


async def get_organization(iam: Iam, grant: Grant) -> OrganizationView:
    async with iam.db.engine.connect() as conn:
        row = await OrganizationRepository(conn).get(grant.organization_id)
    if row is None:
        raise NotFound("organization not found")
    return OrganizationView(id=row["id"], name=row["name"], created_at=row["created_at"], role=grant.org_role)


# -- members ------------------------------------------------------------------------------------


async def list_members(iam: Iam, organization_id: str) -> list[MemberView]:
    async with iam.db.engine.connect() as conn:
        return [MemberView(**r) for r in await OrganizationRepository(conn).members(organization_id)]


async def change_member_role(
    iam: Iam, principal: Principal, grant: Grant, user_id: str, role: str, ip: str | None
) -> MemberView:
    check_role(role, ORG_ROLES, "$.role")
    org_id = grant.organization_id
    async with iam.db.transaction() as conn:
        orgs = OrganizationRepository(conn)
        current = await orgs.member_role(org_id, user_id)
        if current is None:
            raise NotFound(f"user {user_id!r} is not a member of this organization")
        if "owner" in (current, role) and grant.org_role != "owner":
            raise PermissionDenied("only an owner can make or unmake an owner")
        if current == "owner" and role != "owner" and await orgs.count_owners(org_id) == 1:
            raise InputInvalid("an organization keeps at least one owner", field="$.role")
        await orgs.set_role(org_id, user_id, role)
        await audit.record(
            iam,
            principal,
            "member.role_change",
            conn=conn,
            organization_id=org_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            detail={"from": current, "to": role},
        )
        rows = [r for r in await orgs.members(org_id) if r["user_id"] == user_id]
    return MemberView(**rows[0])


async def remove_member(iam: Iam, principal: Principal, grant: Grant, user_id: str, ip: str | None) -> None:
    org_id = grant.organization_id
    async with iam.db.transaction() as conn:
        orgs = OrganizationRepository(conn)
        current = await orgs.member_role(org_id, user_id)
        if current is None:
            raise NotFound(f"user {user_id!r} is not a member of this organization")
        if current == "owner" and grant.org_role != "owner":
            raise PermissionDenied("only an owner can remove an owner")
        if current == "owner" and await orgs.count_owners(org_id) == 1:
            raise InputInvalid("an organization keeps at least one owner", field="user_id")
        await orgs.remove_member(org_id, user_id)
        await audit.record(
            iam,
            principal,
            "member.remove",
            conn=conn,
            organization_id=org_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            detail={"role": current},
        )


# -- namespaces ---------------------------------------------------------------------------------


def _ns_view(row: Row, role: str | None) -> NamespaceView:
    return NamespaceView(
        id=row["id"], organization_id=row["organization_id"], name=row["name"], created_at=row["created_at"], role=role
    )


async def list_namespaces(iam: Iam, principal: Principal, grant: Grant) -> list[NamespaceView]:
    """The organization's namespaces this person can enter (all of them for owners and admins)."""
    assert principal.user_id is not None
    async with iam.db.engine.connect() as conn:
        directory = NamespaceDirectory(conn)
        rows = await directory.of_organization(grant.organization_id)
        roles = await directory.roles_of_user(grant.organization_id, principal.user_id)
    views = []
    for row in rows:
        role = effective_namespace_role(Grant(grant.organization_id, row["id"], grant.org_role, roles.get(row["id"])))
        if role is not None:
            views.append(_ns_view(row, role))
    return views


async def create_namespace(iam: Iam, principal: Principal, grant: Grant, name: str, ip: str | None) -> NamespaceView:
    now = iam.now()
    row: dict[str, Any] = {
        "id": new_id(),
        "organization_id": grant.organization_id,
        "name": _check_name(name),
        "created_at": now,
    }
    try:
        async with iam.db.transaction() as conn:
            directory = NamespaceDirectory(conn)
            if await directory.by_name(grant.organization_id, row["name"]) is not None:
                raise AlreadyExists(f"namespace {row['name']!r} already exists", field="$.name")
            await directory.insert(row)
            await audit.record(
                iam,
                principal,
                "namespace.create",
                conn=conn,
                organization_id=grant.organization_id,
                namespace_id=row["id"],
                target_type="namespace",
                target_id=row["id"],
                ip=ip,
                detail={"name": row["name"]},
            )
    except Exception as exc:
        if is_unique_violation(exc):
            raise AlreadyExists(f"namespace {row['name']!r} already exists", field="$.name") from None
        raise
    return _ns_view(row, "admin")


async def get_namespace(iam: Iam, grant: Grant) -> NamespaceView:
    assert grant.namespace_id is not None
    async with iam.db.engine.connect() as conn:
        row = await NamespaceDirectory(conn).get(grant.namespace_id)
    if row is None:
        raise NotFound("namespace not found")
    return _ns_view(row, effective_namespace_role(grant))


async def delete_namespace(iam: Iam, principal: Principal, grant: Grant, ip: str | None) -> None:
    """Delete a namespace and everything in it (runs, keys, memberships)."""
    assert grant.namespace_id is not None
    async with iam.db.transaction() as conn:
        directory = NamespaceDirectory(conn)
        row = await directory.get(grant.namespace_id)
        if row is None:
            raise NotFound("namespace not found")
        await directory.delete(grant.namespace_id)
        await audit.record(
            iam,
            principal,
            "namespace.delete",
            conn=conn,
            organization_id=grant.organization_id,
            namespace_id=grant.namespace_id,
            target_type="namespace",
            target_id=grant.namespace_id,
            ip=ip,
            detail={"name": row["name"]},
        )


async def list_namespace_members(iam: Iam, namespace_id: str) -> list[MemberView]:
    async with iam.db.engine.connect() as conn:
        return [MemberView(**r) for r in await NamespaceMemberRepository(conn, namespace_id).list()]


async def put_namespace_member(
    iam: Iam, principal: Principal, grant: Grant, user_id: str, role: str, ip: str | None
) -> MemberView:
    assert grant.namespace_id is not None
    check_role(role, NAMESPACE_ROLES, "$.role")
    now = iam.now()
    async with iam.db.transaction() as conn:
        if await OrganizationRepository(conn).member_role(grant.organization_id, user_id) is None:
            raise NotFound(f"user {user_id!r} is not a member of this organization")
        repo = NamespaceMemberRepository(conn, grant.namespace_id)
        before = await repo.role(user_id)
        await repo.put(user_id, role, now)
        await audit.record(
            iam,
            principal,
            "namespace_member.role_change",
            conn=conn,
            organization_id=grant.organization_id,
            namespace_id=grant.namespace_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            detail={"from": before, "to": role},
        )
        rows = [r for r in await repo.list() if r["user_id"] == user_id]
    return MemberView(**rows[0])


async def remove_namespace_member(iam: Iam, principal: Principal, grant: Grant, user_id: str, ip: str | None) -> None:
    assert grant.namespace_id is not None
    async with iam.db.transaction() as conn:
        if not await NamespaceMemberRepository(conn, grant.namespace_id).remove(user_id):
            raise NotFound(f"user {user_id!r} is not a member of this namespace")
        await audit.record(
            iam,
            principal,
            "namespace_member.remove",
            conn=conn,
            organization_id=grant.organization_id,
            namespace_id=grant.namespace_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
        )
