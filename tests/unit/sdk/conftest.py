"""A fake Aiki server on ``httpx.MockTransport``: SDK tests need no real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from aiki.worker_sdk import Client, client
from aiki.worker_sdk._worker_connection import WorkerConnection, connect


@dataclass
class FakeServer:
    """Records every request; answers worker-protocol writes (``POST /workers/commands``) like a cooperative server.

    ``routes`` maps ``(method, path)`` to a callable returning ``(status, json_body)`` and
    overrides the defaults. ``commands`` maps a command kind to a callable returning its result
    (e.g. ``{"problem": {...}}``) and overrides the default answer to that kind.
    """

    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    routes: dict[tuple[str, str], Callable[[httpx.Request], tuple[int, Any]]] = field(default_factory=dict)
    commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
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
        if path == "/workers/commands":
            return httpx.Response(200, json={"results": [self.answer(c) for c in body["commands"]]})
        return httpx.Response(404, json={"type": "about:blank", "title": "nf", "status": 404, "code": "not_found"})

    def answer(self, command: dict[str, Any]) -> dict[str, Any]:
        """The result of one command."""
        kind = command["kind"]
        override = self.commands.get(kind)
        if override is not None:
            return override(command)
        if kind == "record_task":
            return {"record": {"recorded": True}}
        if kind == "await_event" and not self.suspend:
            return {"transition": {"status": "running", "suspended": False, "events": self.transition_events}}
        status = {"complete": "completed", "fail": "failed", "retry": "awaiting_retry"}.get(kind, "sleeping")
        return {"transition": {"status": status, "suspended": True}}

    def sent(self) -> list[dict[str, Any]]:
        """Every command sent, in order."""
        return [c for method, path, body in self.requests if path == "/workers/commands" for c in body["commands"]]

    def writes(self, kind: str | None = None) -> list[Any]:
        """Task records (``kind="task"``, without their ``kind``) or transitions (``kind="transition"``)
        sent, without the ``run_id`` every command names."""
        out = []
        for command in self.sent():
            body = {k: v for k, v in command.items() if k != "run_id"}
            if kind == "task" and body["kind"] == "record_task":
                del body["kind"]
                out.append(body)
            elif kind == "transition" and body["kind"] not in ("record_task", "start_child"):
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


@pytest.fixture
def fake_connection(fake_client: Client) -> WorkerConnection:
    """The worker side of ``fake_client``: what a worker and its executions write through."""
    return connect(fake_client)
