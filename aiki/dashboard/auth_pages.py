"""Sign up, log in, log out, and the dashboard's front door."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery

from aiki.dashboard.web import (
    PREFIX,
    SESSION_COOKIE,
    client_ip,
    iam_of,
    policy,
    principal_of,
    public_context,
    redirect,
    render,
    safe_next,
    session_cookie,
)
from aiki.iam import accounts, orgs, verification
from aiki.platform.domain.errors import CoreError, Unauthenticated


def _status(exc: CoreError) -> int:
    return {"unauthorized": 401, "rate_limited": 429, "already_exists": 409}.get(exc.code, 400)


async def _home_of(request: Request[Any, Any, Any]) -> str:
    """The first page of a signed-in person: the first namespace they can enter."""
    iam = iam_of(request)
    principal = principal_of(request)
    me = await accounts.me(iam, principal)
    for org in me.organizations:
        grant = await accounts.organization_grant(iam, principal, org.id)
        if grant is None:
            continue
        namespaces = await orgs.list_namespaces(iam, principal, grant)
        if namespaces:
            return f"{PREFIX}/ns/{namespaces[0].id}/runs"
    return f"{PREFIX}/namespaces"


class AuthPages(Controller):
    path = "/"

    @get("/", opt=policy("public"))
    async def front_door(self, request: Request[Any, Any, Any]) -> Response[Any]:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return redirect(f"{PREFIX}/login")
        try:
            principal = await accounts.authenticate_session(iam_of(request), cookie)
        except Unauthenticated:
            return redirect(f"{PREFIX}/login")
        request.scope["aiki_principal"] = principal  # type: ignore[typeddict-unknown-key]
        return redirect(await _home_of(request))

    @get("/home", opt=policy("user"))
    async def home(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return redirect(await _home_of(request))

    @get("/login", opt=policy("public"))
    async def login_form(self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Any:
        return render(request, "auth/login.html", public_context(request, next=safe_next(next), email=""))

    @post("/login", opt=policy("public"))
    async def login(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        email = str(form.get("email") or "")
        password = str(form.get("password") or "")
        target = safe_next(str(form.get("next") or ""))
        iam = iam_of(request)
        previous = request.cookies.get(SESSION_COOKIE)
        try:
            new = await accounts.login(
                iam,
                email=email,
                password=password,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                previous_session_id=iam.secrets.session_id(previous) if previous else None,
            )
        except CoreError as exc:
            context = public_context(request, next=target, email=email, error=exc.message)
            return render(request, "auth/login.html", context, status_code=_status(exc))
        response = redirect(target or f"{PREFIX}/home")
        response.set_cookie(session_cookie(iam, new.cookie, iam.config.session_absolute_s))
        return response

    @get("/signup", opt=policy("public"))
    async def signup_form(self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Any:
        return render(request, "auth/signup.html", public_context(request, values={}, next=safe_next(next)))

    @post("/signup", opt=policy("public"))
    async def signup(self, request: Request[Any, Any, Any]) -> Any:
        form = await request.form()
        values = {k: str(form.get(k) or "").strip() for k in ("email", "name", "organization", "namespace")}
        target = safe_next(str(form.get("next") or ""))
        iam = iam_of(request)
        try:
            # Rate limit: the lead wires H2's sign-up throttle here.
            new = await verification.register(
                iam,
                email=values["email"],
                password=str(form.get("password") or ""),
                name=values["name"] or None,
                organization_name=values["organization"] or None,
                namespace_name=values["namespace"] or None,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        except CoreError as exc:
            context = public_context(request, values=values, error=exc.message, next=target)
            return render(request, "auth/signup.html", context, status_code=_status(exc))
        if new is None:  # verification on: the same page for every address (aiki.iam.verification)
            return redirect(f"{PREFIX}/verify-email")
        ns = new.signed_in.namespace
        response = redirect(target or (f"{PREFIX}/ns/{ns.id}/runs" if ns else f"{PREFIX}/namespaces"))
        response.set_cookie(session_cookie(iam, new.cookie, iam.config.session_absolute_s))
        return response

    @post("/logout", opt=policy("user", unverified_ok=True))
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        iam = iam_of(request)
        await accounts.logout(iam, principal_of(request), client_ip(request))
        response = redirect(f"{PREFIX}/login")
        response.set_cookie(session_cookie(iam, "", 0))
        return response
