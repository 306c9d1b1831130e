"""What every dashboard page shares: policies, the CSRF guard, rendering, layout, errors, headers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import ClientException, HTTPException, NotFoundException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from aiki.dashboard import csrf, views
from aiki.iam import accounts, orgs
from aiki.iam.context import Iam
from aiki.iam.models import NamespaceView, OrganizationView
from aiki.iam.policy import Grant, Principal, effective_namespace_role, rule
from aiki.platform.db.integrity import describe, integrity_violation
from aiki.platform.db.raw import is_connection_failure
from aiki.platform.db.value_errors import is_value_out_of_range
from aiki.platform.domain.errors import CoreError, EmailUnverified, PermissionDenied, Unauthenticated
from aiki.platform.services.context import Services
from aiki.worker_sdk import error_codes as codes

log = logging.getLogger("aiki.dashboard")

PREFIX = "/ui"
HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SESSION_COOKIE = "aiki_session"  # the cookie aiki.api.auth authenticates (the API and the dashboard share it)
SSO_LOGIN_PATH = "/api/v1/auth/oidc/login"
HTML = "text/html; charset=utf-8"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# The ``opt`` flag of routes that serve people (sessions) only; ``aiki.api.auth`` enforces it.
PEOPLE_ONLY = "people_only"

SECURITY_HEADERS = {
    # No inline script anywhere: htmx and copy.js are files served from 'self'.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# The codes a page answers with the API's status (the catalogue's); any other core error is a 400 page.
_STATUS_BY_CODE = {
    code: codes.HTTP_STATUS[code]
    for code in (
        codes.NOT_FOUND,
        codes.RUN_NOT_FOUND,
        codes.WORKFLOW_NOT_FOUND,
        codes.SCHEDULE_NOT_FOUND,
        codes.ENDPOINT_NOT_FOUND,
        codes.VERSION_SERVED_ELSEWHERE,
        codes.UNAUTHORIZED,
        codes.FORBIDDEN,
        codes.RATE_LIMITED,
        codes.ALREADY_EXISTS,
        codes.VALIDATION_ERROR,
        codes.REFERENCE_CONFLICT,
        codes.STALE_REVISION,
    )
}


def policy(action: str, *, audit: str | None = None, unverified_ok: bool = False) -> dict[str, Any]:
    """The ``opt`` of a dashboard handler: the same policy table as the API (``aiki.iam.policy``).

    ``unverified_ok``: open to a person who has not verified their email (the other pages send
    them to "verify your email").
    """
    rule(action)
    opt: dict[str, Any] = {"action": action}
    if audit is not None:
        opt["audit"] = audit
    if unverified_ok:
        opt["unverified_ok"] = True
    return opt


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["prefix"] = PREFIX
    return TemplateConfig(instance=JinjaTemplateEngine(engine_instance=env))


# -- request state -------------------------------------------------------------------------------


def iam_of(request: Request[Any, Any, Any]) -> Iam:
    iam: Iam = request.app.state.iam
    return iam


def services_of(request: Request[Any, Any, Any]) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal: Principal | None = connection.scope.get("aiki_principal")  # type: ignore[assignment]
    if principal is None:
        raise Unauthenticated("log in to continue")
    return principal


def grant_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Grant:
    grant: Grant | None = connection.scope.get("aiki_grant")  # type: ignore[assignment]
    if grant is None:
        raise Unauthenticated("log in to continue")
    return grant


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


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


def safe_next(value: str | None) -> str | None:
    """A same-site dashboard path to return to after login (never another host)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return None


# -- CSRF ----------------------------------------------------------------------------------------


async def csrf_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Every unsafe dashboard request: from our origin, and (signed in) with the session's token.

    Runs after the app's IAM guard, which has authenticated the caller. API keys are for the API:
    the dashboard serves people only.
    """
    if connection.scope.get("method", "GET") in _SAFE:
        return
    iam: Iam = connection.app.state.iam
    if not csrf.same_origin(iam.config.origin, connection.headers.get("origin"), connection.headers.get("referer")):
        raise PermissionDenied("this form was not sent from the dashboard's own pages (cross-origin request refused)")
    principal: Principal | None = connection.scope.get("aiki_principal")  # type: ignore[assignment]
    if principal is None:
        return  # public forms (log in, sign up): the origin check above is their protection
    if not principal.is_user:
        raise PermissionDenied("the dashboard is for people; API keys use the API")
    presented = connection.headers.get(csrf.HEADER)
    if not presented:
        form = await Request(connection.scope, connection.receive).form()
        value = form.get(csrf.FIELD)
        presented = value if isinstance(value, str) else None
    # A page rendered before a rotation of the server secret still posts (its token under the previous one).
    if not any(csrf.token_matches(key, principal.session_id, presented) for key in iam.config.secret_keys):
        raise PermissionDenied("the form's security token is missing or belongs to another session; reload the page")


# -- layout --------------------------------------------------------------------------------------


async def layout(
    request: Request[Any, Any, Any], *, namespace_id: str | None = None, organization_id: str | None = None
) -> dict[str, Any]:
    """What ``base.html`` needs: the person, their namespaces (switcher), the CSRF token, roles."""
    iam = iam_of(request)
    principal = principal_of(request)
    me = await accounts.me(iam, principal)
    groups: list[tuple[OrganizationView, list[NamespaceView]]] = []
    for org in me.organizations:
        org_grant = await accounts.organization_grant(iam, principal, org.id)
        if org_grant is None:
            continue
        groups.append((org, await orgs.list_namespaces(iam, principal, org_grant)))
    current: NamespaceView | None = None
    for _, namespaces in groups:
        for ns in namespaces:
            if ns.id == namespace_id:
                current = ns
    if current is None and organization_id is not None:
        # Organization pages keep the nav's namespace links: the organization's first namespace.
        current = next((namespaces[0] for o, namespaces in groups if o.id == organization_id and namespaces), None)
    grant: Grant | None = request.scope.get("aiki_grant")  # type: ignore[assignment]
    ns_role = effective_namespace_role(grant) if grant is not None and grant.namespace_id else None
    org_id = organization_id or (current.organization_id if current else None)
    org_role = next((o.role for o, _ in groups if o.id == org_id), None)
    return {
        "user": me.user,
        "groups": groups,
        "current_ns": current,
        "ns_role": ns_role,
        "org_id": org_id,
        "org_role": org_role,
        "fmt_time": views.fmt_time,
        **csrf_context(request),
    }


def csrf_context(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The token forms and ``hx-headers`` carry (fragments rendered alone need it too)."""
    principal = principal_of(request)
    token = csrf.token_for(iam_of(request).config.secret_key, principal.session_id or "")
    return {"csrf_token": token, "csrf_field": csrf.FIELD}


def render(
    request: Request[Any, Any, Any],
    page: str,
    context: dict[str, Any],
    *,
    partial: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Template:
    """The page, or only its fragment when HTMX asked (``HX-Request``) and the page has one."""
    name = partial if partial is not None and is_htmx(request) else page
    return Template(template_name=name, context=context, status_code=status_code, headers=headers, media_type=HTML)


def sso_enabled(request: Request[Any, Any, Any]) -> bool:
    """Whether to offer "Log in with SSO": an OIDC provider is configured (the login route always exists)."""
    return bool(request.app.state.get("oidc_enabled"))


def public_context(request: Request[Any, Any, Any], **extra: Any) -> dict[str, Any]:
    """Context of pages shown signed out (log in, sign up)."""
    # After SSO the callback sends the browser to ``return_to``: the page asked for, else the dashboard.
    sso_href = f"{SSO_LOGIN_PATH}?return_to={quote(extra.get('next') or PREFIX + '/', safe='/')}"
    return {
        "user": None,
        "groups": [],
        "current_ns": None,
        "sso_href": sso_href if sso_enabled(request) else None,
        **extra,
    }


def redirect(path: str) -> Redirect:
    return Redirect(path, status_code=303)


def after_action(request: Request[Any, Any, Any], path: str) -> Response[Any]:
    """Where a plain form post ends: a 303 to the page to show next (post/redirect/get)."""
    return redirect(path)


# -- errors --------------------------------------------------------------------------------------


def _error_page(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    message: str,
    *,
    extra_headers: dict[str, str] | None = None,
) -> Response[Any]:
    context = {"status": status, "title": title, "message": message, "user": None, "groups": []}
    headers = dict(SECURITY_HEADERS)
    headers.update(extra_headers or {})
    if is_htmx(request):
        # htmx swaps error responses too (see base.html's htmx-config): into the message area.
        headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        return Template(
            template_name="errors/_message.html", context=context, status_code=status, headers=headers, media_type=HTML
        )
    return Template(
        template_name="errors/page.html", context=context, status_code=status, headers=headers, media_type=HTML
    )


def _login_redirect(request: Request[Any, Any, Any], message: str) -> Response[Any]:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    location = f"{PREFIX}/login"
    if request.method == "GET" and safe_next(target):
        location += f"?next={quote(target)}"
    if is_htmx(request):
        return Response(b"", status_code=200, headers={"HX-Redirect": location, **SECURITY_HEADERS})
    return Redirect(location, status_code=303, headers=SECURITY_HEADERS)


def core_error(request: Request[Any, Any, Any], exc: CoreError) -> Response[Any]:
    if isinstance(exc, Unauthenticated):
        return _login_redirect(request, exc.message)
    if isinstance(exc, EmailUnverified):
        location = f"{PREFIX}/verify-email"
        if is_htmx(request):
            return Response(b"", status_code=200, headers={"HX-Redirect": location, **SECURITY_HEADERS})
        return Redirect(location, status_code=303, headers=SECURITY_HEADERS)
    status = _STATUS_BY_CODE.get(exc.code, 400)
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 429: "Too many requests"}
    return _error_page(request, status, titles.get(status, "That did not work"), exc.message)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, NotFoundException):
        return _error_page(request, 404, "Not found", "There is no page at this address.")
    if isinstance(exc, ValidationException):
        return _error_page(request, 400, "That did not work", "The form or address has a value the server cannot read.")
    return _error_page(request, exc.status_code, "That did not work", exc.detail)


def unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_connection_failure(exc):
        log.warning("database unavailable on dashboard %s %s: %s", request.method, request.url.path, exc)
        return _error_page(
            request,
            503,
            "Temporarily unavailable",
            "The database cannot be reached right now; try again in a moment.",
            extra_headers={"Retry-After": "1"},
        )
    if (violation := integrity_violation(exc)) is not None:
        # A race with another request, logged by constraint only (never the violating values).
        log.warning("conflict on dashboard %s %s: %s", request.method, request.url.path, describe(violation))
        return _error_page(request, 409, "Conflict", "This changed meanwhile or already exists: reload and try again.")
    if is_value_out_of_range(exc):
        # A filter or form value the database cannot hold (a NUL in PostgreSQL text, a huge number).
        log.warning("value out of range on dashboard %s %s", request.method, request.url.path)
        return _error_page(
            request,
            400,
            "That did not work",
            "A value in the address or the form cannot be stored or searched for: a number out of range, "
            "a text too long or a NUL character.",
        )
    log.exception("unhandled error on dashboard %s %s", request.method, request.url.path)
    return _error_page(request, 500, "Something went wrong", "An internal error occurred; it has been logged.")


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    CoreError: core_error,
    ValidationException: http_error,
    ClientException: http_error,
    HTTPException: http_error,
    Exception: unexpected,
}
