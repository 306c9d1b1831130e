"""The dashboard: server-rendered pages (Jinja2) made partial by HTMX, served beside the API.

``dashboard_router()`` is mounted by the app factory when IAM is on (the dashboard is for signed-in
people). Pages live under ``/ui``; static files (htmx, the stylesheet, copy.js) under ``/ui/static``.
Every handler declares its action from the same policy table as the API, so the app's IAM guard
authorizes dashboard pages exactly like API routes; a dashboard guard adds the CSRF check.
"""

from __future__ import annotations

from litestar import Router
from litestar.datastructures import ResponseHeader
from litestar.static_files import create_static_files_router

from aiki.dashboard.admin_pages import KeyPages, NamespacePages, SchedulePages, WorkerPages
from aiki.dashboard.auth_pages import AuthPages
from aiki.dashboard.email_pages import EmailPages
from aiki.dashboard.endpoint_pages import EndpointPages
from aiki.dashboard.org_pages import InvitationPages, NamespaceAccessPages, OrgPages, front_router
from aiki.dashboard.runs_pages import RunPages
from aiki.dashboard.web import (
    EXCEPTION_HANDLERS,
    PEOPLE_ONLY,
    PREFIX,
    SECURITY_HEADERS,
    STATIC,
    csrf_guard,
    policy,
    template_config,
)

__all__ = ["dashboard_routers", "template_config"]


def dashboard_routers() -> list[Router]:
    """Every dashboard page and its static files under ``/ui``, and ``/`` (redirects) outside it."""
    return [_pages(), front_router()]


def _pages() -> Router:
    static = create_static_files_router(
        path="/static",
        directories=[STATIC],
        name="dashboard-static",
        opt=policy("public"),
        include_in_schema=False,
    )
    return Router(
        path=PREFIX,
        route_handlers=[
            AuthPages,
            EmailPages,
            NamespacePages,
            OrgPages,
            NamespaceAccessPages,
            InvitationPages,
            RunPages,
            KeyPages,
            WorkerPages,
            SchedulePages,
            EndpointPages,
            static,
        ],
        guards=[csrf_guard],
        # API keys are for the API: aiki.api.auth answers a key on a page like no session at all.
        opt={PEOPLE_ONLY: True},
        exception_handlers=EXCEPTION_HANDLERS,
        response_headers=[ResponseHeader(name=k, value=v) for k, v in SECURITY_HEADERS.items()],
        include_in_schema=False,
    )
