"""A fake Aiki server on ``httpx.MockTransport``: SDK tests need no real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from aiki.worker_sdk import Client, client


@dataclass
class FakeServer:
    """Records every request; answers worker-protocol writes like a cooperative server.

    ``routes`` maps ``(method, path)`` to a callable returning ``(status, json_body)`` and
    overrides the defaults.
    """

    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    routes: dict[tuple[str, str], Callable[[httpx.Request], tuple[int, Any]]] = field(default_factory=dict)
    suspend: bool = True
    transition_events: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        route = self.routes.get((request.method, path))
        if route is not None:
            status, payload = route(request)
            ctype = "application/problem+json" if status >= 400 else "application/json"
            return httpx.Response(status, json=payload, headers={"content-type": ctype})
        if path.endswith("/tasks"):
            return httpx.Response(200, json={"recorded": True})
        if path.endswith("/transition"):
            kind = body["kind"]
            if kind == "await_event" and not self.suspend:
                return httpx.Response(
                    200, json={"status": "running", "suspended": False, "events": self.transition_events}
                )
            status = {"complete": "completed", "fail": "failed", "retry": "awaiting_retry"}.get(kind, "sleeping")
            return httpx.Response(200, json={"status": status, "suspended": True})
        return httpx.Response(404, json={"type": "about:blank", "title": "nf", "status": 404, "code": "not_found"})

    def writes(self, kind: str | None = None) -> list[Any]:
        """Bodies of task records (``kind="task"``) or transitions (``kind="transition"``)."""
        out = []
        for method, path, body in self.requests:
            if method != "POST":
                continue
            suffix = {"task": "/tasks", "transition": "/transition"}.get(kind or "", "")
            if suffix and path.endswith(suffix):
                out.append(body)
        return out


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def fake_client(fake: FakeServer) -> Any:
    c: Client = client(transport=httpx.MockTransport(fake.handle))
    yield c
    await c.close()
