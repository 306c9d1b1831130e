"""The client sends a request again while the server answers 503 (nothing was done), with backoff."""

from __future__ import annotations

import httpx
import pytest

from aiki.worker_sdk import ServerUnavailableError, client
from aiki.worker_sdk._http_backends import UNAVAILABLE_ATTEMPTS

UNAVAILABLE = {"type": "x", "title": "Service unavailable", "status": 503, "code": "unavailable", "detail": "db"}
WORKERS = {"items": []}


def _server(unavailable_answers: int) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) <= unavailable_answers:
            return httpx.Response(503, json=UNAVAILABLE)
        return httpx.Response(200, json=WORKERS)

    return httpx.MockTransport(answer), seen


async def test_a_503_is_retried_until_the_server_answers() -> None:
    transport, seen = _server(unavailable_answers=2)
    async with client(transport=transport) as c:
        assert (await c.list_workers()).items == []
    assert seen == ["/api/v1/workers"] * 3


async def test_503_answers_beyond_the_attempts_raise_server_unavailable() -> None:
    transport, seen = _server(unavailable_answers=100)
    async with client(transport=transport) as c:
        with pytest.raises(ServerUnavailableError):
            await c.list_workers()
    assert len(seen) == UNAVAILABLE_ATTEMPTS


async def test_other_errors_are_not_retried() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(500, json={**UNAVAILABLE, "status": 500, "code": "internal_error"})

    async with client(transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(ServerUnavailableError):
            await c.list_workers()
    assert len(seen) == 1
