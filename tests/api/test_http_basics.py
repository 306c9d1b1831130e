"""HTTP basics on both databases: health, readiness, OpenAPI, and problem+json errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aiki.platform.db import migrate
from aiki.platform.domain.ids import new_id
from tests.conftest import AikiHarness

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]
    assert body["type"].startswith("https://")
    assert body["instance"] == response.request.url.path
    assert "Traceback" not in response.text
    return body


async def test_health(aiki: AikiHarness) -> None:
    response = await aiki.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_the_schema_at_head(aiki: AikiHarness) -> None:
    response = await aiki.http.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["up_to_date"] is True
    assert body["current"] == body["head"] == migrate.head_revision()


async def test_openapi_lists_the_run_and_worker_protocol_routes(aiki: AikiHarness) -> None:
    response = await aiki.http.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    paths: dict[str, dict[str, Any]] = response.json()["paths"]
    expected = {
        "/api/v1/runs": {"get", "post"},
        "/api/v1/runs/{run_id}": {"get"},
        "/api/v1/runs/{run_id}/history": {"get"},
        "/api/v1/runs/{run_id}/events/{name}": {"post"},
        "/api/v1/runs/{run_id}/cancel": {"post"},
        "/api/v1/runs/{run_id}/detail": {"get"},
        "/api/v1/runs/cancel": {"post"},
        "/api/v1/workers": {"get"},
        "/api/v1/workflows": {"get"},
        "/api/v1/workers/register": {"post"},
        "/api/v1/workers/claim": {"post"},
        "/api/v1/workers/heartbeat": {"post"},
        "/api/v1/runs/{run_id}/tasks": {"post"},
        "/api/v1/runs/{run_id}/transition": {"post"},
        "/health": {"get"},
        "/ready": {"get"},
    }
    missing = {path for path in expected if path not in paths}
    assert not missing, f"missing from OpenAPI: {sorted(missing)}; has {sorted(paths)}"
    for path, methods in expected.items():
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    worker_tagged = {
        path
        for path, operations in paths.items()
        for operation in operations.values()
        if isinstance(operation, dict) and "worker protocol" in operation.get("tags", [])
    }
    assert {
        "/api/v1/workers/register",
        "/api/v1/workers/claim",
        "/api/v1/workers/heartbeat",
        "/api/v1/runs/{run_id}/tasks",
        "/api/v1/runs/{run_id}/transition",
    } <= worker_tagged


async def test_unknown_route_is_a_404_problem(aiki: AikiHarness) -> None:
    response = await aiki.http.get("/api/v1/no-such-thing")
    assert_problem(response, 404, "not_found")


async def test_unknown_run_is_run_not_found_naming_the_id(aiki: AikiHarness) -> None:
    run_id = new_id()
    response = await aiki.http.get(f"/api/v1/runs/{run_id}")
    body = assert_problem(response, 404, "run_not_found")
    assert run_id in body["detail"]
    assert body["run_id"] == run_id


@pytest.mark.parametrize("suffix", ["/history", "/cancel"])
async def test_unknown_run_is_run_not_found_on_sub_routes(aiki: AikiHarness, suffix: str) -> None:
    run_id = new_id()
    if suffix == "/cancel":
        response = await aiki.http.post(f"/api/v1/runs/{run_id}{suffix}", json={})
    else:
        response = await aiki.http.get(f"/api/v1/runs/{run_id}{suffix}")
    body = assert_problem(response, 404, "run_not_found")
    assert run_id in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("DELETE", "/api/v1/runs", {}, 405, "method_not_allowed"),
        (
            "POST",
            "/api/v1/runs",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        ("POST", "/api/v1/runs", {"json": {"version": "1.0.0"}}, 422, "validation_error"),
        ("GET", "/api/v1/runs", {"params": {"status": "bogus"}}, 422, "validation_error"),
        (
            "POST",
            "/api/v1/runs",
            {"json": {"workflow": "never-registered", "version": "9.9.9", "input": {}, "require_registered": True}},
            404,
            "workflow_not_found",
        ),
    ],
    ids=["unknown-route", "wrong-method", "malformed-json", "missing-field", "bad-filter", "no-workflow"],
)
async def test_errors_are_problem_json(
    aiki: AikiHarness, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await aiki.http.request(method, path, **kwargs)
    assert_problem(response, status, code)
