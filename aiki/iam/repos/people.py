"""People: users, their mailed tokens, sessions, external identities and OIDC logins in progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam.repos.rows import Row, one
from aiki.iam.tables import (
    email_tokens,
    identities,
    oidc_logins,
    sessions,
    users,
)


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.conn.execute(users.insert().values(**values))

    async def by_email(self, email: str) -> Row | None:
        return one(await self.conn.execute(users.select().where(users.c.email == email)))

    async def get(self, user_id: str) -> Row | None:
        return one(await self.conn.execute(users.select().where(users.c.id == user_id)))

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
        return one(result)

    async def forget(self, user_id: str, purpose: str | None = None) -> None:
        query = email_tokens.delete().where(email_tokens.c.user_id == user_id)
        if purpose is not None:
            query = query.where(email_tokens.c.purpose == purpose)
        await self.conn.execute(query)


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
        return one(await self.conn.execute(query))

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
        return one(await self.conn.execute(query))

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
