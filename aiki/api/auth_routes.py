"""IAM API, accounts: sign-up, email verification, login/logout, password reset, the signed-in person.

Mounted only when the server runs with IAM. Every handler declares its action (``policy(...)``);
the guard in ``aiki.api.auth`` has authorized the caller before the handler runs.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from aiki.api.auth import SESSION_COOKIE, client_ip, policy
from aiki.api.deps import IamDep, PrincipalDep
from aiki.api.iam_requests import (
    API,
    ForgotPasswordRequest,
    LoginRequest,
    ResetPasswordRequest,
    SignupRequest,
    TokenRequest,
)
from aiki.iam import accounts, verification
from aiki.iam.context import Iam
from aiki.iam.models import (
    Accepted,
    Me,
    SignedIn,
)


def session_cookie(iam: Iam, value: str, max_age: int) -> Cookie:
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
        new.signed_in, status_code=status, cookies=[session_cookie(iam, new.cookie, iam.config.session_absolute_s)]
    )


_CHECK_MAIL = Accepted(
    status="check_your_email",
    message="we sent a link to this address: open it to verify the address and sign in",
)


def user_agent(request: Request[Any, Any, Any]) -> str | None:
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
            user_agent=user_agent(request),
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
            user_agent=user_agent(request),
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
            user_agent=user_agent(request),
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
        return Response(None, status_code=204, cookies=[session_cookie(iam, "", 0)])

    @get("/me", summary="The signed-in person and their organizations", opt=policy("user", unverified_ok=True))
    async def me(self, iam: IamDep, principal: PrincipalDep) -> Me:
        return await accounts.me(iam, principal)
