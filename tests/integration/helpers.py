"""Helpers shared by the integration tests (the fixtures themselves live in tests/conftest.py).

Side-effect ledger: task handlers call ``LEDGER.hit(name, key)``; tests read ``LEDGER.count(name, key)``.
Keys are unique per test (``new_key()``), so tests sharing a process never see each other's counts.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
import msgspec

API = "/api/v1"
WAIT = timedelta(seconds=20)
"""How long a test waits for an outcome that should take well under a second."""


class Ledger:
    """Counts (and timestamps) every call of a task handler, keyed by ``(name, key)``."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._values: dict[tuple[str, str], list[Any]] = defaultdict(list)

    def hit(self, name: str, key: str, value: Any = None) -> int:
        """Record one call; returns how many calls (this one included) there have been."""
        self._times[(name, key)].append(time.monotonic())
        self._values[(name, key)].append(value)
        return len(self._times[(name, key)])

    def count(self, name: str, key: str) -> int:
        return len(self._times.get((name, key), []))

    def times(self, name: str, key: str) -> list[float]:
        """``time.monotonic()`` of each call, in call order."""
        return list(self._times.get((name, key), []))

    def values(self, name: str, key: str) -> list[Any]:
        """The ``value`` recorded with each call, in call order."""
        return list(self._values.get((name, key), []))


LEDGER = Ledger()


def new_key(prefix: str = "k") -> str:
    """A test-unique id used as workflow input and ledger key."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def task_address(name: str, value: Any) -> str:
    """A task's memoization address as docs/internals.md defines it."""
    canonical = msgspec.json.Encoder(order="sorted").encode(value)
    return f"{name}:{hashlib.sha256(canonical).hexdigest()[:32]}"


async def get_run(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run as ``GET /api/v1/runs/{id}`` returns it (a ``RunView`` as JSON)."""
    resp = await http.get(f"{API}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def get_history(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """``GET /api/v1/runs/{id}/history`` (``list[HistoryEntry]`` as JSON)."""
    resp = await http.get(f"{API}/runs/{run_id}/history")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Tolerate a paginated envelope as well as a bare list.
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def count_runs(http: httpx.AsyncClient) -> int:
    """How many runs the namespace holds (follows the keyset cursor)."""
    total = 0
    cursor: str | None = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        resp = await http.get(f"{API}/runs", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        total += len(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return total


def error_text(error: dict[str, Any] | None) -> str:
    """All the text of a recorded ``ErrorInfo``, to search for a type, code or message."""
    if not error:
        return ""
    return " ".join(str(error.get(k) or "") for k in ("type", "code", "message", "cause"))


def is_non_determinism(error: dict[str, Any] | None) -> bool:
    """Whether a recorded run error is a NonDeterminismError (by type name or stable code)."""
    if not error:
        return False
    return error.get("type") == "NonDeterminismError" or error.get("code") == "non_determinism"


class CountingASGI:
    """Wraps an ASGI app and records every HTTP request that reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


async def close_client(client: Any) -> None:
    """Close an SDK client built by a test (``close()`` or ``aclose()``, whichever it has)."""
    for name in ("close", "aclose"):
        closer = getattr(client, name, None)
        if closer is not None:
            await closer()
            return
