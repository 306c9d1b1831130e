"""IAM API, namespaces: create and rename them, their members and their API keys."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, JSONBody

from aiki.api.auth import client_ip, policy
from aiki.api.deps import GrantDep, IamDep, PrincipalDep
from aiki.api.iam_requests import API, CreateApiKeyRequest, RoleRequest
from aiki.iam import keys, orgs
from aiki.iam.models import (
    ApiKeyView,
    CreatedApiKey,
    MemberView,
    NamespaceView,
)


class NamespaceController(Controller):
    path = f"{API}/namespaces/{{ns_id:str}}"
    tags = ["namespaces"]

    @get("/", summary="A namespace", opt=policy("namespace:read"))
    async def get_namespace(self, ns_id: FromPath[str], iam: IamDep, grant: GrantDep) -> NamespaceView:
        return await orgs.get_namespace(iam, grant)

    @delete("/", summary="Delete a namespace and everything in it", opt=policy("namespace:manage"))
    async def delete_namespace(
        self,
        request: Request[Any, Any, Any],
        ns_id: FromPath[str],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> None:
        await orgs.delete_namespace(iam, principal, grant, client_ip(request))

    @get("/members", summary="Members of the namespace", opt=policy("members:read"))
    async def list_members(self, ns_id: FromPath[str], iam: IamDep, grant: GrantDep) -> list[MemberView]:
        return await orgs.list_namespace_members(iam, ns_id)

    @put("/members/{user_id:str}", summary="Give an organization member a role here", opt=policy("members:manage"))
    async def put_member(
        self,
        request: Request[Any, Any, Any],
        ns_id: FromPath[str],
        user_id: FromPath[str],
        data: JSONBody[RoleRequest],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> MemberView:
        return await orgs.put_namespace_member(iam, principal, grant, user_id, data.role, client_ip(request))

    @delete("/members/{user_id:str}", summary="Remove a member from the namespace", opt=policy("members:manage"))
    async def remove_member(
        self,
        request: Request[Any, Any, Any],
        ns_id: FromPath[str],
        user_id: FromPath[str],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> None:
        await orgs.remove_namespace_member(iam, principal, grant, user_id, client_ip(request))

    @get("/api-keys", summary="API keys (prefix and last use; never the key)", opt=policy("keys:read"))
    async def list_keys(self, ns_id: FromPath[str], iam: IamDep, grant: GrantDep) -> list[ApiKeyView]:
        return await keys.list_keys(iam, ns_id)

    @post("/api-keys", summary="Create an API key (shown once)", status_code=201, opt=policy("keys:manage"))
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        ns_id: FromPath[str],
        data: JSONBody[CreateApiKeyRequest],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> CreatedApiKey:
        return await keys.create_key(
            iam,
            principal,
            ns_id,
            name=data.name,
            role=data.role,
            expires_at=data.expires_at,
            organization_id=grant.organization_id,
            ip=client_ip(request),
        )

    @delete(
        "/api-keys/{key_id:str}",
        summary="Revoke an API key (effective on its next request)",
        status_code=200,
        opt=policy("keys:manage"),
    )
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        ns_id: FromPath[str],
        key_id: FromPath[str],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> ApiKeyView:
        return await keys.revoke_key(iam, principal, grant, key_id, client_ip(request))
