"""IAM API, organizations: their members, invitations and audit log, and accepting an invitation."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from aiki.api.auth import client_ip, policy
from aiki.api.deps import GrantDep, IamDep, PrincipalDep
from aiki.api.iam_requests import API, AcceptInvitationRequest, InvitationRequest, NameRequest, RoleRequest
from aiki.iam import audit, invitations, orgs
from aiki.iam.models import (
    AuditPage,
    CreatedInvitation,
    InvitationView,
    MemberView,
    NamespaceView,
    OrganizationView,
)


class OrganizationController(Controller):
    path = f"{API}/organizations"
    tags = ["organizations"]

    @get("/", summary="Organizations the signed-in person belongs to", opt=policy("user"))
    async def list_organizations(self, iam: IamDep, principal: PrincipalDep) -> list[OrganizationView]:
        return await orgs.list_organizations(iam, principal)

    @post("/", summary="Create an organization (you become its owner)", status_code=201, opt=policy("user"))
    async def create_organization(
        self, request: Request[Any, Any, Any], data: JSONBody[NameRequest], iam: IamDep, principal: PrincipalDep
    ) -> OrganizationView:
        return await orgs.create_organization(iam, principal, data.name, client_ip(request))

    @get("/{org_id:str}", summary="An organization", opt=policy("org:read"))
    async def get_organization(self, org_id: FromPath[str], iam: IamDep, grant: GrantDep) -> OrganizationView:
        return await orgs.get_organization(iam, grant)

    @get("/{org_id:str}/members", summary="Members and their roles", opt=policy("org:read"))
    async def list_members(self, org_id: FromPath[str], iam: IamDep, grant: GrantDep) -> list[MemberView]:
        return await orgs.list_members(iam, grant.organization_id)

    @patch("/{org_id:str}/members/{user_id:str}", summary="Change a member's role", opt=policy("org:manage"))
    async def change_role(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        user_id: FromPath[str],
        data: JSONBody[RoleRequest],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> MemberView:
        return await orgs.change_member_role(iam, principal, grant, user_id, data.role, client_ip(request))

    @delete("/{org_id:str}/members/{user_id:str}", summary="Remove a member", opt=policy("org:manage"))
    async def remove_member(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        user_id: FromPath[str],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> None:
        await orgs.remove_member(iam, principal, grant, user_id, client_ip(request))

    @get("/{org_id:str}/invitations", summary="Pending invitations", opt=policy("invitations:read"))
    async def list_invitations(self, org_id: FromPath[str], iam: IamDep, grant: GrantDep) -> list[InvitationView]:
        return await invitations.list_invitations(iam, grant.organization_id)

    @post(
        "/{org_id:str}/invitations",
        summary="Invite someone by email (the link is shown once)",
        status_code=201,
        opt=policy("org:manage"),
    )
    async def invite(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        data: JSONBody[InvitationRequest],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> CreatedInvitation:
        return await invitations.create_invitation(
            iam,
            principal,
            grant,
            email=data.email,
            role=data.role,
            namespace_id=data.namespace_id,
            namespace_role=data.namespace_role,
            expires_in_s=data.expires_in_s,
            ip=client_ip(request),
        )

    @delete("/{org_id:str}/invitations/{invitation_id:str}", summary="Cancel an invitation", opt=policy("org:manage"))
    async def cancel_invitation(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        invitation_id: FromPath[str],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> None:
        await invitations.cancel_invitation(iam, principal, grant, invitation_id, client_ip(request))

    @get("/{org_id:str}/namespaces", summary="Namespaces you can enter", opt=policy("org:read"))
    async def list_namespaces(
        self, org_id: FromPath[str], iam: IamDep, principal: PrincipalDep, grant: GrantDep
    ) -> list[NamespaceView]:
        return await orgs.list_namespaces(iam, principal, grant)

    @post("/{org_id:str}/namespaces", summary="Create a namespace", status_code=201, opt=policy("org:manage"))
    async def create_namespace(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        data: JSONBody[NameRequest],
        iam: IamDep,
        principal: PrincipalDep,
        grant: GrantDep,
    ) -> NamespaceView:
        return await orgs.create_namespace(iam, principal, grant, data.name, client_ip(request))

    @get("/{org_id:str}/audit", summary="The audit log, newest first", opt=policy("audit:read"))
    async def audit_log(
        self,
        org_id: FromPath[str],
        iam: IamDep,
        grant: GrantDep,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        return await audit.list_entries(iam, grant.organization_id, cursor=cursor, limit=limit)


class InvitationController(Controller):
    path = f"{API}/invitations"
    tags = ["organizations"]

    @post("/accept", summary="Accept an invitation as the signed-in person", status_code=200, opt=policy("user"))
    async def accept(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AcceptInvitationRequest],
        iam: IamDep,
        principal: PrincipalDep,
    ) -> OrganizationView:
        return await invitations.accept_invitation(iam, principal, data.token, client_ip(request))
