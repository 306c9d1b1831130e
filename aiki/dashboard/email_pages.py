"""Pages of the mailed links: "check your email", "verify your email", forgotten and reset passwords.

The links open a page with a button; the token is used by the POST behind it, so mail scanners
that fetch every link never consume one (``aiki.iam.verification``).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery

from aiki.dashboard.web import (
    PREFIX,
    SESSION_COOKIE,
    client_ip,
    csrf_context,
    iam_of,
    policy,
    principal_of,
    public_context,
    redirect,
    render,
    session_cookie,
)
from aiki.iam import accounts, verification
from aiki.platform.domain.errors import CoreError, Unauthenticated


def _status(exc: CoreError) -> int:
    return {"unauthorized": 401, "rate_limited": 429}.get(exc.code, 400)


class EmailPages(Controller):
    path = "/"

    @get("/verify-email", opt=policy("public"))
    async def verify_page(
        self, request: Request[Any, Any, Any], token: FromQuery[str] = "", sent: FromQuery[str] = ""
    ) -> Any:
        """With ``token``: the button that verifies. Signed in and unverified: "verify your email" and
        a resend button. Otherwise: "check your email" (where sign-up lands)."""
        if token:
            return render(request, "auth/verify_email.html", public_context(request, token=token, mode="confirm"))
        iam = iam_of(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            try:
                principal = await accounts.authenticate_session(iam, cookie)
            except Unauthenticated:
                principal = None
            if principal is not None:
                if principal.email_verified or not iam.config.email_verification:
                    return redirect(f"{PREFIX}/home")
                request.scope["aiki_principal"] = principal  # type: ignore[typeddict-unknown-key]
                context = public_context(
                    request, mode="unverified", email=principal.label, sent=bool(sent), **csrf_context(request)
                )
                return render(request, "auth/verify_email.html", context)
        return render(request, "auth/verify_email.html", public_context(request, mode="check"))

    @post("/verify-email", opt=policy("public"))
    async def verify(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        token = str(form.get("token") or "")
        iam = iam_of(request)
        previous = request.cookies.get(SESSION_COOKIE)
        try:
            new = await verification.verify_email(
                iam,
                token,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                previous_session_id=iam.secrets.session_id(previous) if previous else None,
            )
        except CoreError as exc:
            context = public_context(request, token="", mode="confirm", error=exc.message)
            return render(request, "auth/verify_email.html", context, status_code=_status(exc))
        ns = new.signed_in.namespace
        response = redirect(f"{PREFIX}/ns/{ns.id}/runs" if ns else f"{PREFIX}/home")
        response.set_cookie(session_cookie(iam, new.cookie, iam.config.session_absolute_s))
        return response

    @post("/verify-email/resend", opt=policy("user", unverified_ok=True))
    async def resend(self, request: Request[Any, Any, Any]) -> Response[Any]:
        await verification.resend_verification(iam_of(request), principal_of(request), client_ip(request))
        return redirect(f"{PREFIX}/verify-email?sent=1")

    @get("/forgot-password", opt=policy("public"))
    async def forgot_form(self, request: Request[Any, Any, Any]) -> Any:
        return render(request, "auth/forgot_password.html", public_context(request, email="", done=False))

    @post("/forgot-password", opt=policy("public"))
    async def forgot(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        email = str(form.get("email") or "").strip()
        # Rate limit: the lead wires H2's password-reset throttle here (per IP and globally).
        try:
            await verification.request_password_reset(iam_of(request), email, client_ip(request))
        except CoreError as exc:
            context = public_context(request, email=email, done=False, error=exc.message)
            return render(request, "auth/forgot_password.html", context, status_code=_status(exc))
        return render(request, "auth/forgot_password.html", public_context(request, email=email, done=True))

    @get("/reset-password", opt=policy("public"))
    async def reset_form(self, request: Request[Any, Any, Any], token: FromQuery[str] = "") -> Any:
        return render(request, "auth/reset_password.html", public_context(request, token=token))

    @post("/reset-password", opt=policy("public"))
    async def reset(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        token = str(form.get("token") or "")
        try:
            await verification.reset_password(
                iam_of(request), token, str(form.get("password") or ""), client_ip(request)
            )
        except CoreError as exc:
            context = public_context(request, token=token, error=exc.message)
            return render(request, "auth/reset_password.html", context, status_code=_status(exc))
        response = render(
            request,
            "auth/login.html",
            public_context(request, email="", next=None, notice="Your password is changed. Log in with it."),
        )
        return response
