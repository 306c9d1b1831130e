"""Headers every response carries, added as it is sent (a ``before_send`` hook of the app).

- ``X-Content-Type-Options: nosniff`` everywhere: a JSON answer is never sniffed into HTML.
- ``Cache-Control: no-store`` on every dynamic response that did not choose its own: API answers
  carry new API keys, invitation tokens, sessions (``Set-Cookie``) and tenant data, none of which
  a browser or shared cache may keep. Static dashboard files and the OpenAPI document are exempt.
- ``Strict-Transport-Security`` when the server's public URL (``AIKI_BASE_URL``) is https: browsers
  then refuse to reach it over plain HTTP for a year.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

HSTS = "max-age=31536000; includeSubDomains"
_CACHEABLE_PREFIXES = ("/ui/static/", "/schema")


def security_headers(*, hsts: bool) -> Callable[[Message, Scope], Awaitable[None]]:
    """The ``before_send`` hook; ``hsts`` when the public URL is https."""

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        headers["X-Content-Type-Options"] = "nosniff"
        if hsts:
            headers["Strict-Transport-Security"] = HSTS
        path = scope.get("path", "")
        if "cache-control" not in headers and not path.startswith(_CACHEABLE_PREFIXES):
            headers["Cache-Control"] = "no-store"

    return add_headers
