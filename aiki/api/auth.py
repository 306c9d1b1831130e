"""Authentication and authorization of every route, from one policy.

Each route handler declares the action it performs with ``opt=policy("runs:read")`` (see
``aiki.iam.policy.ACTIONS``). One app-level guard turns the request's credentials into a principal,
finds where the action applies (the API key's namespace; for sessions the ``ns_id`` path
parameter or the ``X-Aiki-Namespace`` header; the ``org_id`` path parameter for organization
actions), loads the principal's grant there and asks ``aiki.iam.policy.authorize``. A route that
declares nothing is refused when IAM is on. Without IAM (embedded ``server()``) every caller works
in the ``default`` namespace and the guard lets everything through.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Message, Scope

from aiki.dashboard import audit_marks, csrf
from aiki.dashboard.web import PEOPLE_ONLY
from aiki.iam import accounts, audit
from aiki.iam.context import Iam
from aiki.iam.policy import Grant, Principal, authorize, rule
from aiki.platform.domain.errors import EmailUnverified, InputInvalid, NotFound, PermissionDenied, Unauthenticated

log = logging.getLogger("aiki.api.auth")

SESSION_COOKIE = "aiki_session"
NAMESPACE_HEADER = "x-aiki-namespace"
# Routes the OpenAPI plugin adds: the API description is public.
PUBLIC_PATH_PREFIX = "/schema"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNVERIFIED_OK = "unverified_ok"


def policy(action: str, *, audit: str | None = None, unverified_ok: bool = False) -> dict[str, Any]:
    """The ``opt`` of a route handler that performs ``action``; ``audit`` names the audit-log action.

    ``unverified_ok``: a person who has not verified their email may use it (only "me", logout and
    asking for a new verification link; everything else answers ``403 email_unverified``).

    Example: ``@post("/{run_id:str}/cancel", opt=policy("runs:manage", audit="run.cancel"))``.
    """
    rule(action)  # an unknown action fails at import time, not at request time
    opt: dict[str, Any] = {"action": action}
    if audit is not None:
        opt["audit"] = audit
    if unverified_ok:
        opt[UNVERIFIED_OK] = True
    return opt


def check_verified(iam: Iam, principal: Principal, handler: BaseRouteHandler) -> None:
    """An unverified person reaches only the routes marked ``unverified_ok`` (``aiki.iam.verification``)."""
    if (
        principal.is_user
        and not principal.email_verified
        and iam.config.email_verification
        and not handler.opt.get(UNVERIFIED_OK)
    ):
        raise EmailUnverified(
            "verify your email address first: open the link we mailed you "
            "(POST /api/v1/auth/verify-email/resend sends a new one)"
        )


def declared_action(handler: BaseRouteHandler, path: str, method: str) -> str | None:
    """The action a handler declared, ``None`` if it declared none.

    Two kinds of routes Litestar adds itself are public: the OpenAPI document (``/schema``) and the
    automatic ``OPTIONS`` answers (they list allowed methods, nothing else).
    """
    action = handler.opt.get("action")
    if isinstance(action, str):
        return action
    if path == PUBLIC_PATH_PREFIX or path.startswith(PUBLIC_PATH_PREFIX + "/") or method == "OPTIONS":
        return "public"
    return None


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return connection.client.host if connection.client else None


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], iam: Iam) -> Principal:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <API key>'")
        return await accounts.authenticate_key(iam, token.strip())
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        return await accounts.authenticate_session(iam, cookie)
    raise Unauthenticated("authentication required: send 'Authorization: Bearer <API key>' or log in")


def _namespace_of(connection: ASGIConnection[Any, Any, Any, Any], principal: Principal) -> str:
    in_path = connection.path_params.get("ns_id")
    in_header = connection.headers.get(NAMESPACE_HEADER)
    if principal.kind == "api_key":
        assert principal.key_namespace_id is not None
        # A key belongs to one namespace; naming another is naming something that does not exist.
        for named in (in_path, in_header):
            if named and named != principal.key_namespace_id:
                raise NotFound(f"namespace {named!r} not found")
        return principal.key_namespace_id
    named = in_path or in_header
    if not named:
        raise InputInvalid(
            "say which namespace this request is for: send the X-Aiki-Namespace header (a namespace id)",
            field="X-Aiki-Namespace",
        )
    return str(named)


def _check_origin(connection: ASGIConnection[Any, Any, Any, Any], iam: Iam) -> None:
    # Session cookies ride along on cross-site requests; an unsafe one must come from our own pages.
    origin = connection.headers.get("origin")
    if origin and origin.rstrip("/").lower() != iam.config.origin:
        raise PermissionDenied(f"cross-origin request from {origin!r} refused")


def _check_session_request(connection: ASGIConnection[Any, Any, Any, Any], iam: Iam, principal: Principal) -> None:
    """An unsafe API request made with the session cookie must show it comes from our own pages.

    A cookie rides along on any cross-site request, and a form or a ``fetch`` without preflight can
    send one with no ``Origin`` (some clients drop it) and a ``text/plain`` body. Accepted: a
    same-origin ``Origin``; else ``Sec-Fetch-Site: same-origin`` (set by the browser, not by
    pages); else the session's CSRF token in ``X-CSRF-Token``, as the dashboard's htmx sends it.
    API keys are not ambient credentials and skip this.
    """
    _check_origin(connection, iam)  # a foreign Origin is refused whatever else the request carries
    if connection.headers.get("origin"):
        return  # present and (checked above) ours
    if connection.headers.get("sec-fetch-site", "").lower() == "same-origin":
        return
    if csrf.token_matches(iam.config.secret_key, principal.session_id, connection.headers.get(csrf.HEADER)):
        return
    raise PermissionDenied(
        "a request made with the session cookie must come from this server's pages: send the Origin header "
        f"of {iam.config.origin}, or the {csrf.HEADER} header of the session (or use an API key)"
    )


async def iam_guard(connection: ASGIConnection[Any, Any, Any, Any], route_handler: BaseRouteHandler) -> None:
    iam: Iam | None = connection.app.state.get("iam")
    if iam is None:
        return
    method = str(connection.scope.get("method", "GET"))
    action = declared_action(route_handler, connection.url.path, method)
    if action is None:
        log.error("route %s declares no access policy; refusing it", route_handler.handler_name)
        raise PermissionDenied("this route declares no access policy")
    r = rule(action)
    unsafe = method not in _SAFE_METHODS
    if r.scope == "public":
        if unsafe and "authorization" not in connection.headers:
            _check_origin(connection, iam)
        return
    principal = await authenticate(connection, iam)
    connection.scope["aiki_principal"] = principal  # type: ignore[typeddict-unknown-key]
    _check_channel(connection, iam, principal, route_handler, unsafe=unsafe)
    check_verified(iam, principal, route_handler)
    grant = await _grant_for(connection, iam, principal, r.scope)
    authorize(principal, action, grant)
    _remember(connection, grant, route_handler.opt.get("audit"))


def _check_channel(
    connection: ASGIConnection[Any, Any, Any, Any],
    iam: Iam,
    principal: Principal,
    route_handler: BaseRouteHandler,
    *,
    unsafe: bool,
) -> None:
    """Refuse a key on the dashboard, and check a session's unsafe request (its origin, its token)."""
    people_only = bool(route_handler.opt.get(PEOPLE_ONLY))
    if people_only and not principal.is_user:
        # The dashboard with an API key: a page is answered as without a session (the login
        # redirect), a form post is refused.
        if unsafe:
            raise PermissionDenied("the dashboard is for people; API keys use the API")
        raise Unauthenticated("the dashboard is for people: log in (API keys work on the API only)")
    if principal.is_user and unsafe:
        if people_only:
            _check_origin(connection, iam)  # the dashboard's own guard checks its token and origin
        else:
            _check_session_request(connection, iam, principal)


async def _grant_for(
    connection: ASGIConnection[Any, Any, Any, Any], iam: Iam, principal: Principal, scope: str
) -> Grant | None:
    """The principal's grant in the organization or namespace the route acts on (None: global scope)."""
    if scope == "organization":
        org_id = str(connection.path_params.get("org_id", ""))
        return await accounts.organization_grant(iam, principal, org_id)
    if scope == "namespace":
        return await accounts.namespace_grant(iam, principal, _namespace_of(connection, principal))
    return None


def _remember(connection: ASGIConnection[Any, Any, Any, Any], grant: Grant | None, audit_action: Any) -> None:
    """Keep the grant, its namespace and the action to audit on the request, for the handler and the audit."""
    if grant is not None:
        connection.scope["aiki_grant"] = grant  # type: ignore[typeddict-unknown-key]
        if grant.namespace_id is not None:
            connection.scope["aiki_namespace_id"] = grant.namespace_id  # type: ignore[typeddict-unknown-key]
    if audit_action:
        connection.scope["aiki_audit"] = audit_action  # type: ignore[typeddict-unknown-key]


async def audit_declared_actions(message: Message, scope: Scope) -> None:
    """Write the audit row of a route that declared one, once its outcome (the status) is known."""
    if message["type"] != "http.response.start":
        return
    state: dict[str, Any] = scope  # type: ignore[assignment]
    action = state.get("aiki_audit")
    if not action:
        return
    iam: Iam | None = scope["app"].state.get("iam")
    principal: Principal | None = state.get("aiki_principal")
    grant: Grant | None = state.get("aiki_grant")
    if iam is None or principal is None:
        return
    status = int(message["status"])
    outcome = "ok" if status < 400 else "denied" if status in (401, 403) else "failed"
    target_type = str(action).split(".", 1)[0]
    path_params: dict[str, Any] = state.get("path_params") or {}
    target_id = state.get(audit_marks.TARGET) or path_params.get(f"{target_type}_id")
    detail: dict[str, Any] = {**(state.get(audit_marks.DETAIL) or {}), "status": status}
    client = state.get("client")
    try:
        await audit.record(
            iam,
            principal,
            str(action),
            outcome,
            organization_id=grant.organization_id if grant else None,
            namespace_id=grant.namespace_id if grant else None,
            target_type=target_type,
            target_id=target_id,
            ip=client[0] if client else None,
            detail=detail,
        )
    except Exception:  # the action already happened; a lost audit row must not turn it into an error
        log.exception("could not write the audit row of %s", action)
