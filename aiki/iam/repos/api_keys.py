"""API keys: the directory that finds a key by id, and a namespace's keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import key_cache
from aiki.iam.repos.rows import Row, all_rows, one
from aiki.iam.tables import (
    api_keys,
)
from aiki.platform.db.tables import namespaces


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
        return one(await self.conn.execute(query))

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
        return one(await self.conn.execute(query))

    async def list(self) -> list[Row]:
        query = (
            sa.select(*_KEY_COLUMNS)
            .where(api_keys.c.namespace_id == self.namespace_id)
            .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        )
        return all_rows(await self.conn.execute(query))

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
