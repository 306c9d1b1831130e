"""Organization pages: members and their roles, invitations (create once-shown, cancel, accept), audit log."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, Router, get, post
from litestar.params import FromPath, FromQuery

from aiki.dashboard import views
from aiki.dashboard.web import (
    PREFIX,
    SESSION_COOKIE,
    client_ip,
    grant_of,
    iam_of,
    layout,
    policy,
    principal_of,
    public_context,
    redirect,
    render,
)
from aiki.iam import accounts, audit, invitations, orgs
from aiki.iam.policy import NAMESPACE_ROLES, ORG_ROLES, effective_namespace_role
from aiki.platform.domain.errors import CoreError, Unauthenticated

_ADMINS = ("owner", "admin")


async def _members_context(request: Request[Any, Any, Any], org_id: str, **extra: Any) -> dict[str, Any]:
    iam = iam_of(request)
    grant = grant_of(request)
    principal = principal_of(request)
    admin = grant.org_role in _ADMINS
    return {
        **await layout(request, organization_id=org_id),
        "org_id": org_id,
        "members": await orgs.list_members(iam, org_id),
        "invitations": await invitations.list_invitations(iam, org_id) if admin else [],
        "org_namespaces": await orgs.list_namespaces(iam, principal, grant),
        "can_manage": admin,
        "is_owner": grant.org_role == "owner",
        "me_id": principal.user_id,
        "org_roles": ORG_ROLES,
        "ns_roles": NAMESPACE_ROLES,
        **extra,
    }


class OrgPages(Controller):
    path = "/orgs/{org_id:str}"

    @get("/members", opt=policy("org:read"))
    async def members(self, request: Request[Any, Any, Any], org_id: FromPath[str]) -> Any:
        return render(request, "orgs/members.html", await _members_context(request, org_id))

    @post("/members/{user_id:str}/role", opt=policy("org:manage"))
    async def change_role(self, request: Request[Any, Any, Any], org_id: FromPath[str], user_id: FromPath[str]) -> Any:
        form = await request.form()
        await orgs.change_member_role(
            iam_of(request),
            principal_of(request),
            grant_of(request),
            user_id,
            str(form.get("role") or ""),
            client_ip(request),
        )
        return redirect(f"{PREFIX}/orgs/{org_id}/members")

    @post("/members/{user_id:str}/remove", opt=policy("org:manage"))
    async def remove_member(
        self, request: Request[Any, Any, Any], org_id: FromPath[str], user_id: FromPath[str]
    ) -> Any:
        await orgs.remove_member(iam_of(request), principal_of(request), grant_of(request), user_id, client_ip(request))
        return redirect(f"{PREFIX}/orgs/{org_id}/members")

    @post("/invitations", opt=policy("org:manage"))
    async def invite(self, request: Request[Any, Any, Any], org_id: FromPath[str]) -> Any:
        form = await request.form()
        ns = str(form.get("namespace_id") or "") or None
        values = {k: str(form.get(k) or "") for k in ("email", "role", "namespace_id", "namespace_role")}
        try:
            created = await invitations.create_invitation(
                iam_of(request),
                principal_of(request),
                grant_of(request),
                email=values["email"],
                role=values["role"] or "member",
                namespace_id=ns,
                namespace_role=(values["namespace_role"] or None) if ns else None,
                expires_in_s=None,
                ip=client_ip(request),
            )
        except CoreError as exc:
            context = await _members_context(request, org_id, error=exc.message, form=values)
            return render(request, "orgs/members.html", context, status_code=422)
        # The link is shown this once (its token is stored as an HMAC only).
        context = await _members_context(request, org_id, created=created)
        return render(request, "orgs/members.html", context)

    @post("/invitations/{invitation_id:str}/cancel", opt=policy("org:manage"))
    async def cancel_invitation(
        self, request: Request[Any, Any, Any], org_id: FromPath[str], invitation_id: FromPath[str]
    ) -> Any:
        await invitations.cancel_invitation(
            iam_of(request), principal_of(request), grant_of(request), invitation_id, client_ip(request)
        )
        return redirect(f"{PREFIX}/orgs/{org_id}/members")

    @get("/audit", opt=policy("audit:read"))
    async def audit_log(
        self, request: Request[Any, Any, Any], org_id: FromPath[str], cursor: FromQuery[str | None] = None
    ) -> Any:
        page = await audit.list_entries(iam_of(request), org_id, cursor=cursor or None, limit=100)
        context = {
            **await layout(request, organization_id=org_id),
            "entries": page.items,
            "next_href": f"{PREFIX}/orgs/{org_id}/audit?cursor={quote(page.next_cursor)}" if page.next_cursor else None,
            "first_href": f"{PREFIX}/orgs/{org_id}/audit" if cursor else None,
            "fmt_time": views.fmt_time,
        }
        return render(request, "orgs/audit.html", context)


class NamespaceAccessPages(Controller):
    """Who may enter a namespace, with which role; organization owners and admins always may."""

    path = "/ns/{ns_id:str}/members"

    @get("/", opt=policy("members:read"))
    async def members(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        iam = iam_of(request)
        grant = grant_of(request)
        members = await orgs.list_namespace_members(iam, ns_id)
        inside = {m.user_id for m in members}
        org_members = await orgs.list_members(iam, grant.organization_id)
        context = {
            **await layout(request, namespace_id=ns_id),
            "ns_id": ns_id,
            "members": members,
            # Organization owners and admins administer every namespace: no namespace role to give.
            "candidates": [m for m in org_members if m.user_id not in inside and m.role == "member"],
            "org_admins": [m for m in org_members if m.role in _ADMINS],
            "can_manage": effective_namespace_role(grant) == "admin",
            "ns_roles": NAMESPACE_ROLES,
        }
        return render(request, "namespaces/members.html", context)

    @post("/", opt=policy("members:manage"))
    async def put_member(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        form = await request.form()
        await orgs.put_namespace_member(
            iam_of(request),
            principal_of(request),
            grant_of(request),
            str(form.get("user_id") or ""),
            str(form.get("role") or ""),
            client_ip(request),
        )
        return redirect(f"{PREFIX}/ns/{ns_id}/members")

    @post("/{user_id:str}/remove", opt=policy("members:manage"))
    async def remove(self, request: Request[Any, Any, Any], ns_id: FromPath[str], user_id: FromPath[str]) -> Any:
        await orgs.remove_namespace_member(
            iam_of(request), principal_of(request), grant_of(request), user_id, client_ip(request)
        )
        return redirect(f"{PREFIX}/ns/{ns_id}/members")


class InvitationPages(Controller):
    path = "/invitations"

    @get("/accept", opt=policy("public"))
    async def accept_page(self, request: Request[Any, Any, Any], token: FromQuery[str] = "") -> Any:
        here = f"{PREFIX}/invitations/accept?token={quote(token)}"
        cookie = request.cookies.get(SESSION_COOKIE)
        principal = None
        if cookie:
            try:
                principal = await accounts.authenticate_session(iam_of(request), cookie)
            except Unauthenticated:
                principal = None
        if principal is None:
            context = public_context(request, token=token, next=here, signed_in=False)
            return render(request, "orgs/accept.html", context)
        request.scope["aiki_principal"] = principal  # type: ignore[typeddict-unknown-key]
        return render(request, "orgs/accept.html", {**await layout(request), "token": token, "signed_in": True})

    @post("/accept", opt=policy("user"))
    async def accept(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        token = str(form.get("token") or "")
        try:
            await invitations.accept_invitation(iam_of(request), principal_of(request), token, client_ip(request))
        except CoreError as exc:
            context = {**await layout(request), "token": token, "signed_in": True, "error": exc.message}
            return render(request, "orgs/accept.html", context, status_code=403 if exc.code == "forbidden" else 400)
        return redirect(f"{PREFIX}/home")


@get("/", opt=policy("public"), include_in_schema=False)
async def root() -> Any:
    return redirect(f"{PREFIX}/")


@get("/invitations/accept", opt=policy("public"), include_in_schema=False)
async def invitation_link(token: FromQuery[str] = "") -> Any:
    """Invitation links point at ``{base_url}/invitations/accept``: the dashboard page answers them."""
    return redirect(f"{PREFIX}/invitations/accept?token={quote(token)}")


def front_router() -> Router:
    """``/`` and the invitation link, outside ``/ui``."""
    return Router(path="/", route_handlers=[root, invitation_link], include_in_schema=False)
