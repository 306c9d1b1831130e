"""``OPTIONS`` answers list every method of their path.

Litestar answers ``OPTIONS`` itself with an ``Allow`` header, but when a path's handlers come from
more than one place (``GET /runs`` and ``POST /runs`` in two controllers), the answer keeps the
methods of the first route it built for the path: ``OPTIONS /api/v1/runs`` said ``GET, OPTIONS``
though ``POST`` is there too. The 405 answers are right (the routing tree knows every method).
This hook rewrites the header of an ``OPTIONS`` answer from the app's merged routes.
"""

from __future__ import annotations

from typing import Any

from litestar.routes import HTTPRoute
from litestar.types import Message, Scope


def allowed_methods(app: Any, path: str) -> str | None:
    """``Allow`` for the route ``path`` (Litestar's template, ``/runs/{run_id:str}``); ``None`` if unknown."""
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path == path:
            return ", ".join(sorted(route.methods))
    return None


async def list_every_allowed_method(message: Message, scope: Scope) -> None:
    """``before_send`` hook: an ``OPTIONS`` answer's ``Allow`` names every method of the path."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    handler = scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    if not paths or len(paths) != 1:
        return
    allow = allowed_methods(scope["app"], next(iter(paths)))
    headers = list(message.get("headers") or [])
    if allow is None or not any(name.lower() == b"allow" for name, _ in headers):
        return
    message["headers"] = [(n, v) for n, v in headers if n.lower() != b"allow"] + [(b"allow", allow.encode())]
