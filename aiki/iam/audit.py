"""The audit log: who did what, when, from where, and how it ended. Never a secret in it."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam.context import Iam
from aiki.iam.models import AuditEntry, AuditPage
from aiki.iam.policy import Principal
from aiki.iam.repos import AuditRepository
from aiki.platform.domain.errors import InputInvalid


def _values(
    iam: Iam,
    actor: Principal | None,
    action: str,
    outcome: str,
    *,
    organization_id: str | None,
    namespace_id: str | None,
    target_type: str | None,
    target_id: str | None,
    ip: str | None,
    detail: dict[str, Any] | None,
    actor_label: str | None,
) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "namespace_id": namespace_id,
        "actor_type": actor.kind if actor else "anonymous",
        "actor_id": (actor.user_id or actor.id) if actor else None,
        "actor_label": actor.label if actor else actor_label,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "outcome": outcome,
        "ip": ip,
        "detail": msgspec.json.encode(detail).decode() if detail else None,
        "created_at": iam.now(),
    }


async def record(
    iam: Iam,
    actor: Principal | None,
    action: str,
    outcome: str = "ok",
    *,
    conn: AsyncConnection | None = None,
    organization_id: str | None = None,
    namespace_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
    actor_label: str | None = None,
) -> None:
    """Append one row; inside ``conn``'s transaction when given (the change and its record commit together)."""
    values = _values(
        iam,
        actor,
        action,
        outcome,
        organization_id=organization_id,
        namespace_id=namespace_id,
        target_type=target_type,
        target_id=target_id,
        ip=ip,
        detail=detail,
        actor_label=actor_label,
    )
    if conn is not None:
        await AuditRepository(conn).insert(values)
        return
    async with iam.db.transaction() as own:
        await AuditRepository(own).insert(values)


async def list_entries(iam: Iam, organization_id: str, *, cursor: str | None, limit: int) -> AuditPage:
    before: int | None = None
    if cursor:
        try:
            before = int(cursor)
        except ValueError:
            raise InputInvalid("cursor is not one this API returned", field="cursor") from None
    async with iam.db.engine.connect() as conn:
        rows = await AuditRepository(conn).list(organization_id, before_id=before, limit=limit + 1)
    items = [AuditEntry(**row) for row in rows[:limit]]
    return AuditPage(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)
