"""What a route handler adds to its audit row (``policy(..., audit=...)``), for the API and the dashboard.

The row is written by ``aiki.api.auth.audit_declared_actions`` once the answer's status is known;
a handler may refine it on the request: the action (a change that enables or disables), the target
(what a create made) and facts (never a secret). It lives here because the dashboard may not
import the API (the API imports the dashboard).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from litestar.connection import ASGIConnection

from aiki.platform.domain.endpoints import Endpoint

ACTION = "aiki_audit"
TARGET = "aiki_audit_target"
DETAIL = "aiki_audit_detail"


def audit_as(
    connection: ASGIConnection[Any, Any, Any, Any],
    *,
    action: str | None = None,
    target_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Refine the audit row of the route handling ``connection``.

    ``action`` replaces the declared one (only when the route declared one), ``target_id`` names
    what was acted on when no path parameter does, ``detail`` adds facts (never a secret).
    """
    scope: dict[str, Any] = connection.scope  # type: ignore[assignment]
    if action is not None and scope.get(ACTION):
        scope[ACTION] = action
    if target_id is not None:
        scope[TARGET] = target_id
    if detail:
        scope[DETAIL] = {**(scope.get(DETAIL) or {}), **detail}


def audit_url(url: str) -> str:
    """A URL as the audit log keeps it: no query string or fragment (they may carry tokens)."""
    try:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))[:300]
    except ValueError:
        return "(unreadable URL)"


def endpoint_facts(e: Endpoint) -> dict[str, Any]:
    """What the audit row of an endpoint change says about it: never its secret."""
    return {"url": audit_url(e.url), "versions": [f"{w}@{v}" for w, v in e.versions], "enabled": e.enabled}
