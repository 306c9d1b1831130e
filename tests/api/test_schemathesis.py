"""schemathesis over the whole OpenAPI document of an IAM-enabled app (issue 4, acceptance 2).

For every operation of ``/schema/openapi.json``, schemathesis generates a bounded number of valid
and invalid requests (derandomized, so a run is repeatable). Each is sent twice through the ASGI
app: with the credentials a legitimate caller would use (an ``admin`` API key for namespace
actions, else the session of the organization's owner, with the organization and namespace ids
filled in so requests get past the tenancy checks), and with no credentials at all. We assert:

* no 5xx, ever (odd input is a 4xx with a clear message);
* a documented 2xx answer matches its schema and content type;
* without credentials, no route but the public ones answers 2xx or 3xx (no response ignores auth).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from litestar.routes import HTTPRoute
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from schemathesis.python.asgi import ASGIClient, _get_portal

from aiki import server
from aiki.api.auth import SESSION_COOKIE, declared_action
from aiki.iam.config import IamConfig
from aiki.iam.mail import MemoryOutbox
from aiki.iam.policy import rule
from aiki.platform.db.engine import Database
from tests.iam_support import PASSWORD, TEST_SECRET, token_in

EXAMPLES_PER_MODE = 10  # per operation, once with valid and once with invalid data
# Errors are problem+json with a stable `code` (docs/internals.md), not per-route documented bodies:
# the schema and content-type checks apply to successful answers.
CHECKS = [not_a_server_error]
SUCCESS_CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
EMAIL = "owner@schemathesis.example"


@dataclass
class Target:
    app: Any
    http: ASGIClient
    key: str
    session: str
    ids: dict[str, str]
    """A real value for each path parameter (our organization, namespace, run, schedule...)."""
    actions: dict[tuple[str, str], str]
    failures: list[str] = field(default_factory=list)
    calls: int = 0


def _actions(app: Any) -> dict[tuple[str, str], str]:
    """``(METHOD, OpenAPI path) -> declared action`` (``/runs/{run_id:str}`` is ``/runs/{run_id}`` there)."""
    out: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                action = declared_action(handler, route.path, method)
                out[(method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))] = action or "undeclared"
    return out


def _setup(http: ASGIClient, outbox: MemoryOutbox) -> tuple[str, str, dict[str, str]]:
    """An owner (signed up and verified through the mailed link), their admin key, a run, a schedule
    and an invitation: real ids to aim requests at."""
    pending = http.post("/api/v1/auth/signup", json={"email": EMAIL, "password": PASSWORD})
    assert pending.status_code == 202, pending.text
    (mail,) = outbox.to(EMAIL)
    signed = http.post("/api/v1/auth/verify-email", json={"token": token_in(mail.text, "/ui/verify-email")})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    org_id, ns_id = body["organization"]["id"], body["namespace"]["id"]
    session = signed.cookies[SESSION_COOKIE]
    as_owner = {SESSION_COOKIE: session}
    created = http.post(f"/api/v1/namespaces/{ns_id}/api-keys", json={"name": "fuzz", "role": "read"}, cookies=as_owner)
    assert created.status_code == 201, created.text
    read_key_id = created.json()["api_key"]["id"]
    created = http.post(
        f"/api/v1/namespaces/{ns_id}/api-keys", json={"name": "fuzz", "role": "admin"}, cookies=as_owner
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    version = {"workflow": "fuzz-wf", "version": "1", "event_schemas": {"go": None}}
    reg = http.post(
        "/api/v1/workers/register", json={"worker_id": "w", "host": "h", "versions": [version]}, headers=auth
    )
    assert reg.status_code == 200, reg.text
    run = http.post("/api/v1/runs", json={"workflow": "fuzz-wf", "version": "1", "input": {}}, headers=auth)
    assert run.status_code == 201, run.text
    schedule = http.post(
        "/api/v1/schedules",
        json={"workflow": "fuzz-wf", "version": "1", "input": {}, "every_ms": 3_600_000},
        headers=auth,
    )
    assert schedule.status_code == 201, schedule.text
    invited = http.post(
        f"/api/v1/organizations/{org_id}/invitations", json={"email": "guest@fuzz.example"}, cookies=as_owner
    )
    assert invited.status_code == 201, invited.text
    ids = {
        "org_id": org_id,
        "ns_id": ns_id,
        "user_id": body["user"]["id"],
        "run_id": run.json()["run"]["id"],
        "schedule_id": schedule.json()["schedule"]["id"],
        "invitation_id": invited.json()["invitation"]["id"],
        "key_id": read_key_id,
        "name": "go",
    }
    return key, session, ids


@pytest.fixture
def target(db_url: str) -> Iterator[Target]:
    config = IamConfig(
        secret_key=TEST_SECRET,
        base_url="http://localhost",
        secure_cookies=False,
        login_max_per_ip=1_000_000,
        login_max_per_account=1_000_000,
    )
    aiki_server = server(db=Database(db_url, migrate=False), iam=config)
    assert aiki_server.iam is not None
    outbox = MemoryOutbox()
    aiki_server.iam.mailer = outbox
    app = aiki_server.handler
    with ASGIClient(app) as http:
        key, session, ids = _setup(http, outbox)
        yield Target(app, http, key, session, ids, _actions(app))
    # The app ran on schemathesis' event loop thread: its connections are closed there.
    _get_portal().call(aiki_server.db.dispose)


def _credentials(t: Target, method: str, path: str, action: str) -> tuple[dict[str, str], dict[str, str]]:
    """Headers and cookies of the legitimate caller of this operation."""
    r = rule(action)
    if r.scope == "namespace" and "admin" in r.key_roles:
        return {"Authorization": f"Bearer {t.key}"}, {}
    session = t.session
    if (method, path) == ("POST", "/api/v1/auth/logout"):  # would end the session the other calls use
        login = t.http.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert login.status_code == 200, login.text
        session = login.cookies[SESSION_COOKIE]
    return {"X-Aiki-Namespace": t.ids["ns_id"]}, {SESSION_COOKIE: session}


def _exercise(t: Target, operation: Any, mode: GenerationMode) -> None:
    method, path = operation.method.upper(), operation.path
    action = t.actions.get((method, path))
    assert action is not None, f"{method} {path}: not a route of the app"
    assert action != "undeclared", f"{method} {path}: no declared policy"

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report every failure; shrinking would only cost time
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        # Our organization and namespace always (else every request stops at the tenancy check),
        # the other ids every second request (else they are only ever "not found"). Deleting our
        # namespace would end the exercise early: that one keeps the generated id.
        for name in case.path_parameters or {}:
            keep_generated = (method, name) == ("DELETE", "ns_id") or (
                name not in ("org_id", "ns_id") and t.calls % 2 == 0
            )
            if name in t.ids and not keep_generated:
                case.path_parameters[name] = t.ids[name]
        headers, cookies = _credentials(t, method, path, action)
        t.calls += 1
        response = case.call(headers=headers, cookies=cookies)
        try:
            checks = SUCCESS_CHECKS if response.status_code < 300 else CHECKS
            case.validate_response(response, checks=checks, headers=headers)
        except BaseException as exc:  # one line per failure, all of them reported together
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            t.failures.append(f"{mode.value} {method} {path} -> {response.status_code}: {_first_line(exc)}")
        if rule(action).scope != "public":
            anonymous = case.call()
            t.calls += 1
            if anonymous.status_code < 400:
                t.failures.append(f"{method} {path} answered {anonymous.status_code} without credentials")

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): there are no negative cases to send.
        assert mode is GenerationMode.NEGATIVE, f"{method} {path}: no valid request could be generated"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " | ".join(line for line in text.splitlines()[:6] if line.strip())[:600]


def test_every_operation_survives_generated_requests(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", target.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _exercise(target, operation, mode)
    print(f"schemathesis: {len(operations)} operations, {target.calls} requests")
    assert not target.failures, f"{len(target.failures)} failures:\n" + "\n".join(target.failures)


# -- the bugs it found, pinned -----------------------------------------------------------------------


async def test_a_number_or_text_the_database_cannot_store_is_a_422(aiki: Any) -> None:
    version = {"workflow": "wf", "version": "1"}
    too_big = {"worker_id": "w", "host": "h", "versions": [version], "pid": 2**70}
    resp = await aiki.http.post("/api/v1/workers/register", json=too_big)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "validation_error"
    assert "out of range" in resp.json()["detail"]
    int32 = {"worker_id": "w", "host": "h", "versions": [version], "pid": -(2**40)}  # fits SQLite, not an int4
    assert (await aiki.http.post("/api/v1/workers/register", json=int32)).status_code in (200, 422)
    nul = {"worker_id": "w", "host": "h", "versions": [{"workflow": "w\x00f", "version": "1"}]}
    resp = await aiki.http.post("/api/v1/workers/register", json=nul)
    assert resp.status_code == (422 if aiki.db == "postgres" else 200), resp.text


def test_a_204_is_documented_without_a_body(sqlite_template: Any, tmp_path: Any) -> None:
    from tests import db_support

    url = db_support.copy_sqlite(sqlite_template, tmp_path / "aiki.db")
    config = IamConfig(secret_key=TEST_SECRET, base_url="http://localhost")
    aiki_server = server(db=Database(url, migrate=False), iam=config)
    with ASGIClient(aiki_server.handler) as http:  # runs the app's lifespan, as a real server does
        doc = http.get("/schema/openapi.json").json()
    logout = doc["paths"]["/api/v1/auth/logout"]["post"]["responses"]["204"]
    assert "content" not in logout
