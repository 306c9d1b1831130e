"""Organizations, namespaces, their members and invitations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import key_cache
from aiki.iam.repos.rows import Row, all_rows, one
from aiki.iam.tables import (
    invitations,
    namespace_members,
    organization_members,
    users,
)
from aiki.platform.db.tables import namespaces, organizations


class OrganizationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(organizations.insert().values(**values))

    async def get(self, org_id: str) -> Row | None:
        return one(await self.conn.execute(organizations.select().where(organizations.c.id == org_id)))

    async def of_user(self, user_id: str) -> list[Row]:
        om = organization_members
        query = (
            sa.select(organizations.c.id, organizations.c.name, organizations.c.created_at, om.c.role)
            .join(om, om.c.organization_id == organizations.c.id)
            .where(om.c.user_id == user_id)
            .order_by(organizations.c.created_at)
        )
        return all_rows(await self.conn.execute(query))

    async def add_member(self, org_id: str, user_id: str, role: str, now: int) -> None:
        await self.conn.execute(
            organization_members.insert().values(organization_id=org_id, user_id=user_id, role=role, created_at=now)
        )

    async def member_role(self, org_id: str, user_id: str) -> str | None:
        om = organization_members
        result = await self.conn.execute(
            sa.select(om.c.role).where(om.c.organization_id == org_id, om.c.user_id == user_id)
        )
        role: str | None = result.scalar_one_or_none()
        return role

    async def members(self, org_id: str) -> list[Row]:
        om = organization_members
        query = (
            sa.select(users.c.id.label("user_id"), users.c.email, users.c.name, om.c.role, om.c.created_at)
            .join(om, om.c.user_id == users.c.id)
            .where(om.c.organization_id == org_id)
            .order_by(om.c.created_at, users.c.id)
        )
        return all_rows(await self.conn.execute(query))

    async def count_members(self, org_id: str) -> int:
        om = organization_members
        result = await self.conn.execute(sa.select(sa.func.count()).where(om.c.organization_id == org_id))
        return int(result.scalar_one())

    async def count_owners(self, org_id: str) -> int:
        om = organization_members
        result = await self.conn.execute(
            sa.select(sa.func.count()).where(om.c.organization_id == org_id, om.c.role == "owner")
        )
        return int(result.scalar_one())

    async def set_role(self, org_id: str, user_id: str, role: str) -> None:
        om = organization_members
        await self.conn.execute(
            om.update().where(om.c.organization_id == org_id, om.c.user_id == user_id).values(role=role)
        )

    async def remove_member(self, org_id: str, user_id: str) -> None:
        om = organization_members
        await self.conn.execute(om.delete().where(om.c.organization_id == org_id, om.c.user_id == user_id))
        ns_ids = sa.select(namespaces.c.id).where(namespaces.c.organization_id == org_id)
        nm = namespace_members
        await self.conn.execute(nm.delete().where(nm.c.user_id == user_id, nm.c.namespace_id.in_(ns_ids)))


class NamespaceDirectory:
    """Namespaces of an organization (the tenancy roots), and who may enter them."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(namespaces.insert().values(**values))

    async def get(self, namespace_id: str) -> Row | None:
        return one(await self.conn.execute(namespaces.select().where(namespaces.c.id == namespace_id)))

    async def by_name(self, org_id: str, name: str) -> Row | None:
        query = namespaces.select().where(namespaces.c.organization_id == org_id, namespaces.c.name == name)
        return one(await self.conn.execute(query))

    async def of_organization(self, org_id: str) -> list[Row]:
        query = namespaces.select().where(namespaces.c.organization_id == org_id).order_by(namespaces.c.created_at)
        return all_rows(await self.conn.execute(query))

    async def grant(self, namespace_id: str, user_id: str) -> Row | None:
        """The namespace's organization and the user's roles there, in one read."""
        om, nm = organization_members, namespace_members
        query = (
            sa.select(
                namespaces.c.id.label("namespace_id"),
                namespaces.c.organization_id,
                om.c.role.label("org_role"),
                nm.c.role.label("namespace_role"),
            )
            .select_from(namespaces)
            .outerjoin(om, sa.and_(om.c.organization_id == namespaces.c.organization_id, om.c.user_id == user_id))
            .outerjoin(nm, sa.and_(nm.c.namespace_id == namespaces.c.id, nm.c.user_id == user_id))
            .where(namespaces.c.id == namespace_id)
        )
        return one(await self.conn.execute(query))

    async def roles_of_user(self, org_id: str, user_id: str) -> dict[str, str]:
        nm = namespace_members
        query = (
            sa.select(nm.c.namespace_id, nm.c.role)
            .join(namespaces, namespaces.c.id == nm.c.namespace_id)
            .where(namespaces.c.organization_id == org_id, nm.c.user_id == user_id)
        )
        return {r["namespace_id"]: r["role"] for r in all_rows(await self.conn.execute(query))}

    async def delete(self, namespace_id: str) -> None:
        """Delete a namespace; its keys go with it (cascade), so no cache may keep serving them."""
        key_cache.forget_namespace(namespace_id)
        await self.conn.execute(namespaces.delete().where(namespaces.c.id == namespace_id))


class NamespaceMemberRepository:
    """Members of one namespace."""

    def __init__(self, conn: AsyncConnection, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def list(self) -> list[Row]:
        nm = namespace_members
        query = (
            sa.select(users.c.id.label("user_id"), users.c.email, users.c.name, nm.c.role, nm.c.created_at)
            .join(nm, nm.c.user_id == users.c.id)
            .where(nm.c.namespace_id == self.namespace_id)
            .order_by(nm.c.created_at, users.c.id)
        )
        return all_rows(await self.conn.execute(query))

    async def role(self, user_id: str) -> str | None:
        nm = namespace_members
        result = await self.conn.execute(
            sa.select(nm.c.role).where(nm.c.namespace_id == self.namespace_id, nm.c.user_id == user_id)
        )
        role: str | None = result.scalar_one_or_none()
        return role

    async def put(self, user_id: str, role: str, now: int) -> None:
        nm = namespace_members
        if await self.role(user_id) is None:
            await self.conn.execute(
                nm.insert().values(namespace_id=self.namespace_id, user_id=user_id, role=role, created_at=now)
            )
        else:
            await self.conn.execute(
                nm.update().where(nm.c.namespace_id == self.namespace_id, nm.c.user_id == user_id).values(role=role)
            )

    async def remove(self, user_id: str) -> bool:
        nm = namespace_members
        result = await self.conn.execute(
            nm.delete().where(nm.c.namespace_id == self.namespace_id, nm.c.user_id == user_id)
        )
        return result.rowcount == 1


class InvitationRepository:
    """Invitations of one organization (tokens are found globally: a link names no organization)."""

    def __init__(self, conn: AsyncConnection, organization_id: str | None) -> None:
        self.conn = conn
        self.organization_id = organization_id

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(invitations.insert().values(organization_id=self.organization_id, **values))

    async def get(self, invitation_id: str) -> Row | None:
        query = invitations.select().where(
            invitations.c.id == invitation_id, invitations.c.organization_id == self.organization_id
        )
        return one(await self.conn.execute(query))

    async def list_pending(self, now: int) -> list[Row]:
        query = (
            invitations.select()
            .where(
                invitations.c.organization_id == self.organization_id,
                invitations.c.accepted_at.is_(None),
                invitations.c.cancelled_at.is_(None),
                invitations.c.expires_at > now,
            )
            .order_by(invitations.c.created_at)
        )
        return all_rows(await self.conn.execute(query))

    async def by_token_hash(self, *token_hashes: str) -> Row | None:
        """The invitation stored under one of ``token_hashes`` (one per server secret in use)."""
        query = invitations.select().where(invitations.c.token_hash.in_(token_hashes))
        return one(await self.conn.execute(query))

    async def update(self, invitation_id: str, values: Mapping[str, Any]) -> None:
        await self.conn.execute(invitations.update().where(invitations.c.id == invitation_id).values(**values))

    async def claim(self, invitation_id: str, user_id: str, now: int) -> bool:
        """Mark a pending invitation accepted by ``user_id``; False if someone (maybe the same
        person, concurrently) already did. One conditional UPDATE, so only one accept adds members."""
        result = await self.conn.execute(
            invitations.update()
            .where(
                invitations.c.id == invitation_id,
                invitations.c.accepted_at.is_(None),
                invitations.c.cancelled_at.is_(None),
            )
            .values(accepted_at=now, accepted_by=user_id)
        )
        return result.rowcount == 1
