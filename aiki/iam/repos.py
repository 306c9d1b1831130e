"""SQL of IAM. Namespace-scoped repositories fix their namespace when built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import key_cache
from aiki.iam.tables import (
    api_keys,
    audit_log,
    email_tokens,
    identities,
    invitations,
    namespace_members,
    oidc_logins,
    organization_members,
    rate_limits,
    sessions,
    users,
)
from aiki.platform.db.tables import namespaces, organizations

Row = Mapping[str, Any]


def _one(result: sa.CursorResult[Any]) -> Row | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


def _all(result: sa.CursorResult[Any]) -> list[Row]:
    return [dict(r) for r in result.mappings().all()]


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(users.insert().values(**values))

    async def by_email(self, email: str) -> Row | None:
        return _one(await self.conn.execute(users.select().where(users.c.email == email)))

    async def get(self, user_id: str) -> Row | None:
        return _one(await self.conn.execute(users.select().where(users.c.id == user_id)))

    async def set_password_hash(self, user_id: str, password_hash: str, now: int) -> None:
        await self.conn.execute(
            users.update().where(users.c.id == user_id).values(password_hash=password_hash, updated_at=now)
        )

    async def mark_verified(self, user_id: str, now: int) -> None:
        """Record that the person proved they read mail at their address (kept if already set)."""
        await self.conn.execute(
            users.update()
            .where(users.c.id == user_id, users.c.email_verified_at.is_(None))
            .values(email_verified_at=now, updated_at=now)
        )


class EmailTokenRepository:
    """Tokens of mailed links (verification, password reset), by HMAC; each is taken once."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def replace(self, values: Mapping[str, Any]) -> None:
        """Store a new token of ``values['purpose']`` for its user; the user's older ones of that purpose die."""
        await self.forget(values["user_id"], values["purpose"])
        await self.conn.execute(email_tokens.insert().values(**values))

    async def take(self, token_hash: str, purpose: str) -> Row | None:
        """Delete the token and return it: one statement, so two clicks cannot both use it."""
        result = await self.conn.execute(
            email_tokens.delete()
            .where(email_tokens.c.token_hash == token_hash, email_tokens.c.purpose == purpose)
            .returning(email_tokens.c.user_id, email_tokens.c.password_hash, email_tokens.c.expires_at)
        )
        return _one(result)

    async def forget(self, user_id: str, purpose: str | None = None) -> None:
        query = email_tokens.delete().where(email_tokens.c.user_id == user_id)
        if purpose is not None:
            query = query.where(email_tokens.c.purpose == purpose)
        await self.conn.execute(query)


class OrganizationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(organizations.insert().values(**values))

    async def get(self, org_id: str) -> Row | None:
        return _one(await self.conn.execute(organizations.select().where(organizations.c.id == org_id)))

    async def of_user(self, user_id: str) -> list[Row]:
        om = organization_members
        query = (
            sa.select(organizations.c.id, organizations.c.name, organizations.c.created_at, om.c.role)
            .join(om, om.c.organization_id == organizations.c.id)
            .where(om.c.user_id == user_id)
            .order_by(organizations.c.created_at)
        )
        return _all(await self.conn.execute(query))

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
        return _all(await self.conn.execute(query))

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
        return _one(await self.conn.execute(namespaces.select().where(namespaces.c.id == namespace_id)))

    async def by_name(self, org_id: str, name: str) -> Row | None:
        query = namespaces.select().where(namespaces.c.organization_id == org_id, namespaces.c.name == name)
        return _one(await self.conn.execute(query))

    async def of_organization(self, org_id: str) -> list[Row]:
        query = namespaces.select().where(namespaces.c.organization_id == org_id).order_by(namespaces.c.created_at)
        return _all(await self.conn.execute(query))

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
        return _one(await self.conn.execute(query))

    async def roles_of_user(self, org_id: str, user_id: str) -> dict[str, str]:
        nm = namespace_members
        query = (
            sa.select(nm.c.namespace_id, nm.c.role)
            .join(namespaces, namespaces.c.id == nm.c.namespace_id)
            .where(namespaces.c.organization_id == org_id, nm.c.user_id == user_id)
        )
        return {r["namespace_id"]: r["role"] for r in _all(await self.conn.execute(query))}

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
        return _all(await self.conn.execute(query))

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
        return _one(await self.conn.execute(query))

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
        return _all(await self.conn.execute(query))

    async def by_token_hash(self, *token_hashes: str) -> Row | None:
        """The invitation stored under one of ``token_hashes`` (one per server secret in use)."""
        query = invitations.select().where(invitations.c.token_hash.in_(token_hashes))
        return _one(await self.conn.execute(query))

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


class SessionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(sessions.insert().values(**values))

    async def with_user(self, session_id: str) -> Row | None:
        query = (
            sa.select(
                sessions.c.id,
                sessions.c.user_id,
                sessions.c.last_seen_at,
                sessions.c.expires_at,
                sessions.c.revoked_at,
                users.c.email,
                users.c.email_verified_at,
            )
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id == session_id)
        )
        return _one(await self.conn.execute(query))

    async def touch(self, session_id: str, now: int) -> None:
        await self.conn.execute(sessions.update().where(sessions.c.id == session_id).values(last_seen_at=now))

    async def revoke(self, session_id: str, now: int) -> bool:
        result = await self.conn.execute(
            sessions.update().where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        return result.rowcount == 1

    async def revoke_all_of(self, user_id: str, now: int) -> None:
        """End every live session of a person (their password changed: whoever else was in is out)."""
        await self.conn.execute(
            sessions.update()
            .where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )


class ApiKeyDirectory:
    """Key lookup by id, across namespaces: how a request's key finds its namespace."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, key_id: str) -> Row | None:
        query = (
            sa.select(api_keys, namespaces.c.organization_id)
            .join(namespaces, namespaces.c.id == api_keys.c.namespace_id)
            .where(api_keys.c.id == key_id)
        )
        return _one(await self.conn.execute(query))

    async def mark_used(self, key_id: str, now: int) -> None:
        await self.conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now))

    async def rehash(self, key_id: str, old_hash: str, new_hash: str) -> None:
        """Store a key's hash under the new server secret, unless another replica already did."""
        await self.conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.key_hash == old_hash).values(key_hash=new_hash)
        )


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.namespace_id,
    api_keys.c.name,
    api_keys.c.role,
    api_keys.c.created_by,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


class ApiKeyRepository:
    """API keys of one namespace. Reads never return the stored hash.

    Whatever changes a key's authorization facts (revocation here; a role change, if one is
    added) must also drop it from the verified-key caches (``aiki.iam.key_cache``).
    """

    def __init__(self, conn: AsyncConnection, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(api_keys.insert().values(namespace_id=self.namespace_id, **values))

    async def get(self, key_id: str) -> Row | None:
        query = sa.select(*_KEY_COLUMNS).where(api_keys.c.id == key_id, api_keys.c.namespace_id == self.namespace_id)
        return _one(await self.conn.execute(query))

    async def list(self) -> list[Row]:
        query = (
            sa.select(*_KEY_COLUMNS)
            .where(api_keys.c.namespace_id == self.namespace_id)
            .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        )
        return _all(await self.conn.execute(query))

    async def revoke(self, key_id: str, now: int) -> None:
        key_cache.forget_key(key_id)
        await self.conn.execute(
            api_keys.update()
            .where(
                api_keys.c.id == key_id, api_keys.c.namespace_id == self.namespace_id, api_keys.c.revoked_at.is_(None)
            )
            .values(revoked_at=now)
        )

    async def revoke_named(self, name: str, now: int) -> None:
        key_cache.forget_namespace(self.namespace_id)  # rare (``aiki dev`` start): the whole namespace
        await self.conn.execute(
            api_keys.update()
            .where(
                api_keys.c.namespace_id == self.namespace_id, api_keys.c.name == name, api_keys.c.revoked_at.is_(None)
            )
            .values(revoked_at=now)
        )


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(audit_log.insert().values(**values))

    async def list(self, organization_id: str, *, before_id: int | None, limit: int) -> list[Row]:
        query = audit_log.select().where(audit_log.c.organization_id == organization_id)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        return _all(await self.conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit)))


_HIT_SQL = sa.text(
    "INSERT INTO rate_limits (key, window_start, count) VALUES (:key, :now, :hits) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN rate_limits.window_start <= :cutoff THEN :hits ELSE rate_limits.count + :hits END, "
    "window_start = CASE WHEN rate_limits.window_start <= :cutoff THEN :now ELSE rate_limits.window_start END "
    "RETURNING count, window_start"
)


_STRIKE_SQL = sa.text(
    "INSERT INTO rate_limits (key, window_start, count) VALUES (:key, :now, 1) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN rate_limits.window_start <= :cutoff THEN 1 ELSE rate_limits.count + 1 END, "
    "window_start = :now "
    "RETURNING count"
)


class RateLimitRepository:
    """Fixed-window counters in the database, so every replica counts the same attempts."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def hit(self, key: str, now: int, window_ms: int, hits: int = 1) -> tuple[int, int]:
        """Count ``hits`` attempts under ``key``; return the count in the current window and its start."""
        params = {"key": key, "now": now, "cutoff": now - window_ms, "hits": hits}
        result = await self.conn.execute(_HIT_SQL, params)
        row = result.one()
        return int(row[0]), int(row[1])

    async def clear(self, keys: Sequence[str]) -> None:
        await self.conn.execute(rate_limits.delete().where(rate_limits.c.key.in_(list(keys))))

    async def strike(self, key: str, now: int, forget_ms: int) -> int:
        """Count one more failure under ``key`` and remember ``now`` as the latest (``window_start``);
        a count whose latest failure is ``forget_ms`` old or older starts again. Returns the count."""
        result = await self.conn.execute(_STRIKE_SQL, {"key": key, "now": now, "cutoff": now - forget_ms})
        return int(result.one()[0])

    async def read(self, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``key -> (count, window_start)`` of the rows that exist."""
        query = sa.select(rate_limits.c.key, rate_limits.c.count, rate_limits.c.window_start).where(
            rate_limits.c.key.in_(list(keys))
        )
        return {str(key): (int(count), int(start)) for key, count, start in (await self.conn.execute(query)).all()}


class IdentityRepository:
    """External (OIDC) identities: how a login at a provider finds its user."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def user_of(self, issuer: str, subject: str) -> Row | None:
        query = (
            sa.select(users)
            .join(identities, identities.c.user_id == users.c.id)
            .where(identities.c.issuer == issuer, identities.c.subject == subject)
        )
        return _one(await self.conn.execute(query))

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(identities.insert().values(**values))

    async def update_email(self, issuer: str, subject: str, email: str | None, verified: bool) -> None:
        await self.conn.execute(
            identities.update()
            .where(identities.c.issuer == issuer, identities.c.subject == subject)
            .values(email=email, email_verified=verified)
        )


class OidcLoginRepository:
    """Logins in progress of ONE browser (``browser_hash`` fixed when built)."""

    def __init__(self, conn: AsyncConnection, browser_hash: str) -> None:
        self.conn = conn
        self.browser_hash = browser_hash

    async def insert(self, state: str, pending: str, now: int) -> None:
        await self.conn.execute(
            oidc_logins.insert().values(browser_hash=self.browser_hash, state=state, pending=pending, created_at=now)
        )

    async def take(self, state: str) -> str | None:
        """Delete this browser's login with ``state`` and return it: one statement, so used once."""
        result = await self.conn.execute(
            oidc_logins.delete()
            .where(oidc_logins.c.browser_hash == self.browser_hash, oidc_logins.c.state == state)
            .returning(oidc_logins.c.pending)
        )
        pending: str | None = result.scalar_one_or_none()
        return pending

    async def purge_before(self, cutoff: int) -> None:
        """Forget every browser's logins started before ``cutoff`` (their callbacks would be refused)."""
        await self.conn.execute(oidc_logins.delete().where(oidc_logins.c.created_at < cutoff))
