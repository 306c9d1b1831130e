"""The ASGI plumbing of a push endpoint: lifespan, reading a bounded body, JSON answers, replays.

Kept apart from ``endpoint.py`` (what a delivery means) so that this is only the protocol: no
framework, the app runs under any ASGI server or mounted in any ASGI framework.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encoder = msgspec.json.Encoder()


class BodyTooLarge(Exception):
    """The request body is larger than the endpoint takes."""


class Disconnected(Exception):
    """The client went away before its request body arrived."""


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI server's startup and shutdown (nothing to set up: the client is the user's)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def refuse_websocket(receive: Receive, send: Send) -> None:
    """A WebSocket connection: closed at once (policy violation), the endpoint speaks HTTP only."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def headers_of(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (a repeated header: its last value)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes.

    Raises:
        BodyTooLarge: It is longer (by its ``content-length`` or as it arrives).
        Disconnected: The client went away first.
    """
    declared = headers_of(scope).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
    """Answer with ``body`` as JSON (a msgspec Struct or plain data)."""
    payload = _encoder.encode(body)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class ReplayGuard:
    """The ``webhook-id`` of accepted deliveries, each kept until its signature would be stale anyway.

    Bounded: past ``max_ids`` live ids the oldest are forgotten (a replay of one of them, still
    within its signature's tolerance, would then get through: the bound is sized well above a
    tolerance window's worth of deliveries).
    """

    def __init__(self, max_ids: int = 100_000) -> None:
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._max_ids = max_ids

    def __len__(self) -> int:
        return len(self._expiry)

    def accept(self, msg_id: str, expires_at: float, now: float) -> bool:
        """Remember ``msg_id`` until ``expires_at``; False if it is already remembered (a replay)."""
        self._forget_expired(now)
        known = self._expiry.get(msg_id)
        if known is not None and known > now:
            return False
        self._expiry[msg_id] = expires_at
        self._expiry.move_to_end(msg_id)
        while len(self._expiry) > self._max_ids:
            self._expiry.popitem(last=False)
        return True

    def _forget_expired(self, now: float) -> None:
        # Ids arrive in about the order they expire: the oldest are at the front.
        while self._expiry:
            msg_id, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                return
            del self._expiry[msg_id]
