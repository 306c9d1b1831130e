"""The OpenAPI document declares every answer the API gives (issue 11, acceptance 2).

Errors are ``application/problem+json`` with one shared ``Problem`` schema, declared on every
operation from what the route is (``aiki/api/openapi_docs.py``); undeclared methods answer 405
with ``Allow``; ``OPTIONS`` lists every method of a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from schemathesis.python.asgi import ASGIClient, _get_portal

from aiki import server
from aiki.api.errors import PROBLEM_MEDIA_TYPE
from aiki.iam.config import IamConfig
from aiki.iam.policy import rule
from aiki.platform.db.engine import Database
from aiki.worker_sdk.protocol import Problem
from tests import db_support
from tests.iam_support import TEST_SECRET

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_WRITES = {"post", "put", "patch", "delete"}


def _client(sqlite_template: Path, tmp_path: Path, *, iam: bool) -> Iterator[tuple[Any, ASGIClient]]:
    url = db_support.copy_sqlite(sqlite_template, tmp_path / "aiki.db")
    config = IamConfig(secret_key=TEST_SECRET, base_url="http://localhost", secure_cookies=False) if iam else None
    aiki_server = server(db=Database(url, migrate=False), iam=config)
    with ASGIClient(aiki_server.handler) as http:  # runs the app's lifespan, as a real server does
        yield aiki_server.handler, http
    _get_portal().call(aiki_server.db.dispose)


@pytest.fixture
def iam_app(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[Any, ASGIClient]]:
    yield from _client(sqlite_template, tmp_path, iam=True)


@pytest.fixture
def iam_doc(iam_app: tuple[Any, ASGIClient]) -> dict[str, Any]:
    response = iam_app[1].get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, path, operation


def test_every_error_of_every_operation_is_a_declared_problem(iam_app: tuple[Any, ASGIClient]) -> None:
    app, http = iam_app
    doc = http.get("/schema/openapi.json").json()
    actions = {(m.lower(), p): a for (m, p), a in _declared_actions(app).items()}
    count = 0
    for method, path, operation in _operations(doc):
        count += 1
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        statuses = {int(code) for code in responses if code.isdigit()}
        errors = {s for s in statuses if s >= 400}
        for status in errors:
            content = responses[str(status)].get("content")
            if (method, path, status) == ("get", "/ready", 503):  # its own body: what is not ready
                continue
            assert content == {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}, f"{where} {status}: {content}"
        assert 503 in errors, where
        assert "Retry-After" in responses["503"]["headers"], where
        params = operation.get("parameters", [])
        scope = rule(actions[(method, path)]).scope
        if scope != "public":
            assert {401, 403, 429} <= errors, where
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True, where
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
            assert operation["security"], where
        else:
            assert "security" not in operation, where
        if any(p["in"] == "path" for p in params) or scope in ("organization", "namespace"):
            assert 404 in errors, where
        if params or "requestBody" in operation:
            assert {400, 422} <= errors, where
        if "requestBody" in operation:
            assert {413, 415} <= errors, where
        if method in _WRITES:
            assert 409 in errors, where
        # Litestar's generic 400 ({status_code, detail, extra}) is a body this API never sends.
        assert "application/json" not in (responses.get("400", {}).get("content") or {}), where
    assert count >= 55, count


def _declared_actions(app: Any) -> dict[tuple[str, str], str]:
    from tests.api.test_schemathesis import _actions

    return _actions(app)


def test_the_problem_schema_is_what_errors_send(iam_app: tuple[Any, ASGIClient], iam_doc: dict[str, Any]) -> None:
    schema = iam_doc["components"]["schemas"]["Problem"]
    fields = msgspec.structs.fields(Problem)
    assert set(schema["properties"]) == {f.encode_name for f in fields}
    assert set(schema["required"]) == {f.name for f in fields if f.required} == {"type", "title", "status", "code"}
    assert schema["properties"]["status"] == {"type": "integer"}
    _, http = iam_app
    for response in (
        http.get("/api/v1/runs"),  # 401
        http.get("/api/v1/nowhere"),  # 404
        http.post("/api/v1/auth/login", data=b"{", headers={"content-type": "application/json"}),  # 400
        http.post("/api/v1/auth/login", json={"email": 1}),  # 422
    ):
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.status_code
        body = response.json()
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), body
        for name, value in body.items():
            assert isinstance(value, int if schema["properties"][name]["type"] == "integer" else str), (name, value)


def test_trace_and_other_undeclared_methods_answer_405_with_allow(iam_app: tuple[Any, ASGIClient]) -> None:
    _, http = iam_app
    for method, path, allowed in (
        ("TRACE", "/api/v1/runs", {"GET", "POST", "OPTIONS"}),
        ("TRACE", "/health", {"GET", "OPTIONS"}),
        ("TRACE", "/api/v1/runs/some-run", {"GET", "OPTIONS"}),
        ("PUT", "/api/v1/auth/login", {"POST", "OPTIONS"}),
        ("DELETE", "/api/v1/organizations", {"GET", "POST", "OPTIONS"}),
        ("TRACE", "/schema/openapi.json", {"GET", "OPTIONS"}),
    ):
        response = http.request(method, path)
        assert response.status_code == 405, (method, path, response.status_code)
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, (path, response.headers)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert response.json()["code"] == "method_not_allowed"


def test_options_lists_every_method_of_a_path(iam_app: tuple[Any, ASGIClient]) -> None:
    # GET and POST /runs come from two controllers; Litestar's answer listed only the first one's.
    _, http = iam_app
    for path, allowed in (
        ("/api/v1/runs", {"GET", "POST", "OPTIONS"}),
        ("/api/v1/organizations", {"GET", "POST", "OPTIONS"}),
        ("/api/v1/namespaces/n/members/u", {"PUT", "DELETE", "OPTIONS"}),
        ("/api/v1/schedules/s", {"GET", "DELETE", "OPTIONS"}),
    ):
        response = http.options(path)
        assert response.status_code == 204, (path, response.text)
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, (path, response.headers)


def test_every_success_status_a_route_answers_is_declared(iam_doc: dict[str, Any]) -> None:
    paths = iam_doc["paths"]
    # Idempotent creates answer 201 when they create and 200 when they find what exists.
    for path, method in (
        ("/api/v1/runs", "post"),
        ("/api/v1/runs/{run_id}/events/{name}", "post"),
        ("/api/v1/schedules", "post"),
    ):
        assert {"200", "201"} <= set(paths[path][method]["responses"]), path
    # Login always answered 200, and was documented 201.
    assert set(paths["/api/v1/auth/login"]["post"]["responses"]) & {"200", "201"} == {"200"}
    assert set(paths["/api/v1/auth/signup"]["post"]["responses"]) & {"200", "201"} == {"201"}


def test_without_iam_no_operation_promises_authentication(sqlite_template: Path, tmp_path: Path) -> None:
    for _, http in _client(sqlite_template, tmp_path, iam=False):
        doc = http.get("/schema/openapi.json").json()
        assert "securitySchemes" not in doc["components"]
        for method, path, operation in _operations(doc):
            assert not {"401", "403", "429"} & set(operation["responses"]), (method, path)
            assert "503" in operation["responses"], (method, path)
