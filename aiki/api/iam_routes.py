"""IAM API: sign-up, login/logout, organizations, members, invitations, namespaces, API keys, audit.

Mounted only when the server runs with IAM. Every handler declares its action (``policy(...)``);
the guard in ``aiki.api.auth`` has authorized the caller before the handler runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import Cookie
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect

from aiki.api.auth import SESSION_COOKIE, client_ip, policy
from aiki.api.deps import GrantDep, IamDep, PrincipalDep
from aiki.api.openapi_docs import problems
from aiki.iam import accounts, audit, keys, oidc_login, orgs, verification
from aiki.iam.context import Iam
from aiki.iam.models import (
    Accepted,
    ApiKeyView,
    AuditPage,
    CreatedApiKey,
    CreatedInvitation,
    InvitationView,
    Me,
    MemberView,
    NamespaceView,
    OrganizationView,
    SignedIn,
)

API = "/api/v1"


class SignupRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
    name: str | None = None
    organization: str | None = None
    namespace: str | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class ForgotPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str


class ResetPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str


class NameRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class RoleRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: str


class InvitationRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    role: str = "member"
    namespace_id: str | None = None
    namespace_role: str | None = None
    expires_in_s: int | None = None


class AcceptInvitationRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class CreateApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str
    expires_at: int | None = None
    """Expiry in milliseconds since the Unix epoch; ``None`` for a key that does not expire."""


def _session_cookie(iam: Iam, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/",
        httponly=True,
        secure=iam.config.secure_cookies,
        samesite="lax",
        max_age=max_age,
    )


def _signed_in(iam: Iam, new: accounts.NewSession, status: int) -> Response[SignedIn]:
    return Response(
        new.signed_in, status_code=status, cookies=[_session_cookie(iam, new.cookie, iam.config.session_absolute_s)]
    )


_CHECK_MAIL = Accepted(
    status="check_your_email",
    message="we sent a link to this address: open it to verify the address and sign in",
)


def _ua(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("user-agent")


class AuthController(Controller):
    path = f"{API}/auth"
    tags = ["auth"]

    @post(
        "/signup",
        summary="Sign up: mails a verification link (202), or signs in at once when verification is off (201)",
        description=(
            "With email verification on (the default) the answer is the same for every address: 202 and "
            "no session. A new address gets an unverified account and a link (POST /auth/verify-email); "
            "a taken one gets a notice mailed to its owner. With AIKI_EMAIL_VERIFICATION=off: 201, "
            "signed in."
        ),
        status_code=201,
        responses={202: ResponseSpec(data_container=Accepted, description="Check your email")},
        opt=policy("public"),
    )
    async def signup(
        self, request: Request[Any, Any, Any], data: JSONBody[SignupRequest], iam: IamDep
    ) -> Response[SignedIn | Accepted]:
        # Rate limit: the lead wires H2's sign-up throttle here.
        new = await verification.register(
            iam,
            email=data.email,
            password=data.password,
            name=data.name,
            organization_name=data.organization,
            namespace_name=data.namespace,
            ip=client_ip(request),
            user_agent=_ua(request),
        )
        if new is None:
            return Response(_CHECK_MAIL, status_code=202)
        return _signed_in(iam, new, 201)  # type: ignore[return-value]

    @post(
        "/verify-email",
        summary="Follow a verification link: verify the address and sign in (sets the session cookie)",
        status_code=200,
        opt=policy("public"),
    )
    async def verify_email(
        self, request: Request[Any, Any, Any], data: JSONBody[TokenRequest], iam: IamDep
    ) -> Response[SignedIn]:
        previous = request.cookies.get(SESSION_COOKIE)
        new = await verification.verify_email(
            iam,
            data.token,
            ip=client_ip(request),
            user_agent=_ua(request),
            previous_session_id=iam.secrets.session_id(previous) if previous else None,
        )
        return _signed_in(iam, new, 200)

    @post(
        "/verify-email/resend",
        summary="Mail a new verification link to the signed-in person (older links stop working)",
        status_code=202,
        opt=policy("user", unverified_ok=True),
    )
    async def resend_verification(
        self, request: Request[Any, Any, Any], iam: IamDep, principal: PrincipalDep
    ) -> Accepted:
        sent = await verification.resend_verification(iam, principal, client_ip(request))
        if not sent:
            return Accepted(status="already_verified", message="your email address is verified already")
        return _CHECK_MAIL

    @post(
        "/password/forgot",
        summary="Mail a password-reset link (the same answer for every address)",
        status_code=202,
        opt=policy("public"),
    )
    async def forgot_password(
        self, request: Request[Any, Any, Any], data: JSONBody[ForgotPasswordRequest], iam: IamDep
    ) -> Accepted:
        await verification.request_password_reset(iam, data.email, client_ip(request))
        return Accepted(
            status="check_your_email",
            message="if an account has this address, a link to reset its password is on its way",
        )

    @post(
        "/password/reset",
        summary="Set a new password with a reset link (verifies the address, ends every session)",
        status_code=204,
        opt=policy("public"),
    )
    async def reset_password(
        self, request: Request[Any, Any, Any], data: JSONBody[ResetPasswordRequest], iam: IamDep
    ) -> None:
        await verification.reset_password(iam, data.token, data.password, client_ip(request))

    @post(
        "/login",
        summary="Log in with email and password (sets the session cookie)",
        status_code=200,
        opt=policy("public"),
    )
    async def login(
        self, request: Request[Any, Any, Any], data: JSONBody[LoginRequest], iam: IamDep
    ) -> Response[SignedIn]:
        previous = request.cookies.get(SESSION_COOKIE)
        new = await accounts.login(
            iam,
            email=data.email,
            password=data.password,
            ip=client_ip(request),
            user_agent=_ua(request),
            previous_session_id=iam.secrets.session_id(previous) if previous else None,
        )
        return _signed_in(iam, new, 200)

    @post(
        "/logout",
        summary="End the session (revoked server-side)",
        status_code=204,
        opt=policy("user", unverified_ok=True),
    )
    async def logout(self, request: Request[Any, Any, Any], iam: IamDep, principal: PrincipalDep) -> Response[None]:
        await accounts.logout(iam, principal, client_ip(request))
        return Response(None, status_code=204, cookies=[_session_cookie(iam, "", 0)])

    @get("/me", summary="The signed-in person and their organizations", opt=policy("user", unverified_ok=True))
    async def me(self, iam: IamDep, principal: PrincipalDep) -> Me:
        return await accounts.me(iam, principal)


OIDC_BROWSER_COOKIE = "aiki_oidc"
"""The pre-login token of a browser in the middle of an OIDC login (never a session)."""
_OIDC_PATH = f"{API}/auth/oidc"


def _oidc_cookie(iam: Iam, value: str, max_age: int) -> Cookie:
    # Lax: the provider's redirect back is a top-level GET, which carries it; other sites' requests do not.
    return Cookie(
        key=OIDC_BROWSER_COOKIE,
        value=value,
        path=_OIDC_PATH,
        httponly=True,
        secure=iam.config.secure_cookies,
        samesite="lax",
        max_age=max_age,
    )


class OidcController(Controller):
    path = _OIDC_PATH
    tags = ["auth"]

    @get(
        "/login",
        summary="Sign in through the configured OpenID provider (redirects there)",
        status_code=302,
        # Not configured (404), the provider unreachable (502); starts are rate limited per address.
        opt=policy("public") | problems(404, 429, 502),
    )
    async def oidc_login(
        self,
        request: Request[Any, Any, Any],
        iam: IamDep,
        return_to: Annotated[str | None, QueryParameter(description="a path on this server to show afterwards")] = None,
    ) -> Redirect:
        started = await oidc_login.begin(iam, return_to=return_to, ip=client_ip(request))
        rp = oidc_login.relying_party(iam)
        return Redirect(
            started.url,
            status_code=302,
            cookies=[_oidc_cookie(iam, started.browser_token, rp.pending_ttl_ms // 1000)],
        )

    @get(
        "/callback",
        summary="Where the OpenID provider sends the browser back (sets the session cookie)",
        status_code=303,
        # The provider's answer does not authenticate (401) or its identity is not allowed here (403).
        opt=policy("public") | problems(401, 403, 404, 502),
    )
    async def oidc_callback(
        self,
        request: Request[Any, Any, Any],
        iam: IamDep,
        # `state` is a reserved parameter name in Litestar (the app state): read it under another name.
        callback_state: Annotated[str | None, QueryParameter(name="state")] = None,
        code: FromQuery[str | None] = None,
        error: FromQuery[str | None] = None,
        error_description: FromQuery[str | None] = None,
        iss: FromQuery[str | None] = None,
    ) -> Redirect:
        given = {
            "state": callback_state,
            "code": code,
            "error": error,
            "error_description": error_description,
            "iss": iss,
        }
        previous = request.cookies.get(SESSION_COOKIE)
        done = await oidc_login.complete(
            iam,
            request.cookies.get(OIDC_BROWSER_COOKIE),
            {k: v for k, v in given.items() if v is not None},
            ip=client_ip(request),
            user_agent=_ua(request),
            previous_session_id=iam.secrets.session_id(previous) if previous else None,
        )
        return Redirect(
            done.return_to or "/",
            status_code=303,
            cookies=[
                _session_cookie(iam, done.session.cookie, iam.config.session_absolute_s),
                _oidc_cookie(iam, "", 0),
            ],
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
        return await orgs.list_invitations(iam, grant.organization_id)

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
        return await orgs.create_invitation(
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
        await orgs.cancel_invitation(iam, principal, grant, invitation_id, client_ip(request))

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
        return await orgs.accept_invitation(iam, principal, data.token, client_ip(request))


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


IAM_CONTROLLERS = [AuthController, OidcController, OrganizationController, InvitationController, NamespaceController]
