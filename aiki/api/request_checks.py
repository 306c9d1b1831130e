"""Checks every request passes before its handler runs, in one ASGI middleware.

- A path with control characters (``%00``, ``%0a`` ...) names nothing: 404, before a handler can
  feed it to the file system (``embedded null byte``) or to PostgreSQL.
- The client address is the TCP peer unless the peer is a trusted proxy (``aiki.api.proxies``).
- On JSON routes (all but the dashboard's forms under ``/ui``) a body declared as anything but
  JSON is refused with 415: the API would read it as JSON whatever its label, and ``text/plain``
  is what a cross-site form can send without a CORS preflight. A body with no ``Content-Type`` is
  read as JSON (plain HTTP clients and scripts often send none): the cross-site ``fetch`` that
  sends one untyped carries only the browser's cookie, and an unsafe cookie request must prove it
  comes from our pages (``aiki.api.auth``), so it is refused there with 403. An empty body is not
  checked, whatever its label.
- A JSON body nested deeper than :data:`aiki.api.json_depth.MAX_JSON_DEPTH` is refused with 400
  before the decoder sees it (the decoder recurses per level and would end in ``RecursionError``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from aiki.api.json_depth import MAX_JSON_DEPTH, exceeds_depth
from aiki.api.proxies import TrustedProxies

log = logging.getLogger("aiki.api.requests")

FORM_PATH_PREFIX = "/ui/"  # the dashboard: HTML forms, not JSON
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class UnsupportedMediaType(HTTPException):
    """A JSON route was sent a body of another media type."""

    status_code = 415


class JsonTooDeep(ClientException):
    """A JSON body nests deeper than :data:`MAX_JSON_DEPTH` (``malformed_json``, 400)."""


class RequestChecks:
    """The ASGI middleware (mounted with ``DefineMiddleware(RequestChecks, trusted_proxies=...)``)."""

    def __init__(self, app: ASGIApp, trusted_proxies: TrustedProxies | None = None) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies or TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if _CONTROL.search(path):
            # Probes of this kind are worth a line; the formatter escapes what the path holds.
            log.info("refused a request whose path holds control characters: %s", path)
            raise NotFoundException("there is nothing at an address with control characters")
        if self.trusted_proxies:
            _resolve_client(scope, self.trusted_proxies)
        if str(scope.get("method")) in _BODY_METHODS and not path.startswith(FORM_PATH_PREFIX):
            # An empty body is not read, whatever its label (aiohttp, the SDK's network client,
            # labels a bodiless POST application/octet-stream).
            content_type = _header(scope, b"content-type") if _has_body(scope) else None
            if content_type is not None and not is_json_media_type(content_type):
                raise UnsupportedMediaType(
                    f"this route reads JSON: send the body as application/json, not {content_type[:100]!r}"
                )
            receive = _depth_checked(receive)
        await self.app(scope, receive, send)


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``; charset=utf-8``) aside."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return (length is not None and length.strip() != "0") or _header(scope, b"transfer-encoding") is not None


def _resolve_client(scope: Scope, trusted: TrustedProxies) -> None:
    client = scope.get("client")
    if not client:
        return
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"]
    if forwarded:
        host = trusted.client(client[0], ",".join(forwarded))
        if host != client[0]:
            scope["client"] = (host, 0)


def _depth_checked(receive: Receive) -> Receive:
    """``receive`` that measures the body's nesting once its last chunk has arrived."""
    chunks: list[bytes] = []

    async def checked() -> ReceiveMessage:
        message: Any = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                body = b"".join(chunks)
                chunks.clear()
                if exceeds_depth(body):
                    raise JsonTooDeep(f"the JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
        return message  # type: ignore[no-any-return]

    return checked
