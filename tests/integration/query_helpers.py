"""Helpers of the run query tests: register versions and start runs over HTTP, page through lists."""

from __future__ import annotations

from typing import Any

import httpx

from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.ids import new_id, now_ms

from .helpers import API


async def register(http: httpx.AsyncClient, *versions: tuple[str, str], worker_id: str = "registrar") -> None:
    """Declare workflow versions without a worker claiming anything, so started runs stay queued."""
    resp = await http.post(
        f"{API}/workers/register",
        json={"worker_id": worker_id, "host": "test", "versions": [{"workflow": w, "version": v} for w, v in versions]},
    )
    assert resp.status_code == 200, resp.text


async def start(http: httpx.AsyncClient, workflow: str, version: str, input: Any = None, **options: Any) -> str:
    resp = await http.post(f"{API}/runs", json={"workflow": workflow, "version": version, "input": input, **options})
    assert resp.status_code == 201, resp.text
    run_id: str = resp.json()["run"]["id"]
    return run_id


async def list_page(http: httpx.AsyncClient, params: Any = None) -> dict[str, Any]:
    resp = await http.get(f"{API}/runs", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def list_all(http: httpx.AsyncClient, params: Any = None, *, limit: int = 3) -> list[dict[str, Any]]:
    """Every run the filter matches, following ``next_cursor`` (small pages to exercise the cursor)."""
    items: list[dict[str, Any]] = []
    base = list(params.items()) if isinstance(params, dict) else list(params or [])
    cursor: str | None = None
    while True:
        query = [*base, ("limit", limit)] + ([("cursor", cursor)] if cursor else [])
        body = await list_page(http, query)
        items.extend(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return items


async def insert_child(aiki: Any, parent_id: str, workflow: str, version: str, status: str = "queued") -> str:
    """A run whose parent is ``parent_id``, written through the run repository.

    Child runs have no public start path yet; the query side only needs the ``parent_run_id`` link.
    """
    run_id = new_id()
    now = now_ms()
    async with aiki.server.db.raw_transaction() as conn:
        await RunRepository(conn, DEFAULT_NAMESPACE_ID).insert(
            {
                "id": run_id,
                "workflow_name": workflow,
                "version": version,
                "status": status,
                "revision": 0,
                "attempt": 1,
                "recoveries": 0,
                "max_recoveries": 10,
                "input": "null",
                "parent_run_id": parent_id,
                "queued_at": now if status == "queued" else None,
                "created_at": now,
                "updated_at": now,
            }
        )
    return run_id


def assert_bad_param(resp: httpx.Response, name: str) -> None:
    """A 400/422 problem that names the offending parameter."""
    assert resp.status_code in (400, 422), resp.text
    body = resp.json()
    assert name in (body.get("field") or "") or name in body.get("detail", ""), body
