"""API keys of a namespace: created by people (never by keys), shown once, revoked at once."""

from __future__ import annotations

from aiki.iam import audit
from aiki.iam.context import Iam
from aiki.iam.crypto import key_prefix, new_api_key
from aiki.iam.models import ApiKeyView, CreatedApiKey
from aiki.iam.policy import KEY_ROLES, Grant, Principal
from aiki.iam.repos import ApiKeyRepository, Row
from aiki.platform.domain.errors import InputInvalid, NotFound, PermissionDenied


def _view(row: Row) -> ApiKeyView:
    return ApiKeyView(
        id=row["id"],
        prefix=key_prefix(row["id"]),
        namespace_id=row["namespace_id"],
        name=row["name"],
        role=row["role"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


async def create_key(
    iam: Iam,
    principal: Principal | None,
    namespace_id: str,
    *,
    name: str,
    role: str,
    expires_at: int | None,
    organization_id: str | None = None,
    ip: str | None = None,
) -> CreatedApiKey:
    """Create a key; ``principal`` is the person creating it (``None`` only for the server's own dev key)."""
    if principal is not None and not principal.is_user:
        raise PermissionDenied("API keys cannot create API keys")
    if role not in KEY_ROLES:
        raise InputInvalid(f"role {role!r} is not one of {', '.join(KEY_ROLES)}", field="$.role")
    label = name.strip()
    if not label or len(label) > 200:
        raise InputInvalid("name must be 1 to 200 characters", field="$.name")
    now = iam.now()
    if expires_at is not None and expires_at <= now:
        raise InputInvalid("expires_at must be in the future", field="$.expires_at")
    parsed = new_api_key()
    row = {
        "id": parsed.key_id,
        "name": label,
        "role": role,
        "key_hash": iam.secrets.api_key_hash(parsed.token),
        "created_by": principal.user_id if principal else None,
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
        "last_used_at": None,
    }
    async with iam.db.transaction() as conn:
        await ApiKeyRepository(conn, namespace_id).insert(row)
        await audit.record(
            iam,
            principal,
            "api_key.create",
            conn=conn,
            organization_id=organization_id,
            namespace_id=namespace_id,
            target_type="api_key",
            target_id=parsed.key_id,
            ip=ip,
            detail={"name": label, "role": role},
            actor_label=None if principal else "aiki server",
        )
    return CreatedApiKey(api_key=_view({**row, "namespace_id": namespace_id}), key=parsed.token)


async def list_keys(iam: Iam, namespace_id: str) -> list[ApiKeyView]:
    async with iam.db.engine.connect() as conn:
        return [_view(r) for r in await ApiKeyRepository(conn, namespace_id).list()]


async def revoke_key(iam: Iam, principal: Principal, grant: Grant, key_id: str, ip: str | None) -> ApiKeyView:
    assert grant.namespace_id is not None
    now = iam.now()
    async with iam.db.transaction() as conn:
        repo = ApiKeyRepository(conn, grant.namespace_id)
        if await repo.get(key_id) is None:
            raise NotFound(f"API key {key_id!r} not found")
        await repo.revoke(key_id, now)
        await audit.record(
            iam,
            principal,
            "api_key.revoke",
            conn=conn,
            organization_id=grant.organization_id,
            namespace_id=grant.namespace_id,
            target_type="api_key",
            target_id=key_id,
            ip=ip,
        )
        row = await repo.get(key_id)
    assert row is not None
    return _view(row)


async def replace_server_key(iam: Iam, namespace_id: str, name: str, role: str) -> CreatedApiKey:
    """A fresh key for the server's own in-process worker (``aiki dev``); earlier ones of that name are revoked."""
    async with iam.db.transaction() as conn:
        await ApiKeyRepository(conn, namespace_id).revoke_named(name, iam.now())
    return await create_key(iam, None, namespace_id, name=name, role=role, expires_at=None)
