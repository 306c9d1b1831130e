"""schemathesis over the whole OpenAPI document of an IAM-enabled app (issue 4, acceptance 2; issue 11).

Two runs, both with every check schemathesis has (``--checks all``; our loop does ``ignored_auth``
its own, stronger way), so every answer must be what the document says: its status declared, its
content type (``application/problem+json`` for errors) and body schema, its headers
(``Retry-After``, ``WWW-Authenticate``), ``Allow`` on a 405 and on ``OPTIONS``, valid requests
accepted and invalid ones refused, no operation that ignores its credentials.

* ``schemathesis run`` itself (its engine, in-process): the examples, coverage (undeclared methods
  such as ``TRACE``, missing and malformed parameters), fuzzing and stateful phases, each operation
  with its legitimate caller's credentials.
* Our own loop: for every operation, a bounded number of valid and invalid requests (derandomized,
  so a run is repeatable), each sent twice through the ASGI app: with the credentials a legitimate
  caller would use (an ``admin`` API key for namespace actions, else the session of the
  organization's owner, with real organization, namespace, run, schedule... ids so requests get
  past the tenancy checks), and with no credentials at all. No 5xx, ever (odd input is a 4xx with
  a clear message), and without credentials no route but the public ones answers 2xx or 3xx.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from litestar.routes import HTTPRoute
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import ASGIClient, _get_portal

from aiki import server
from aiki.api.auth import SESSION_COOKIE, declared_action
from aiki.iam.config import IamConfig
from aiki.iam.mail import MemoryOutbox
from aiki.iam.policy import rule
from aiki.platform.db.engine import Database
from tests.iam_support import PASSWORD, RELAXED_LIMITS, TEST_SECRET, token_in

EXAMPLES_PER_MODE = 10  # per operation, once with valid and once with invalid data
# Every check, as `--checks all`. In our own loop the stateful ones (`use_after_free`,
# `ensure_resource_availability`, `object_level_authorization`) have no earlier requests to relate
# to and pass vacuously; the engine's stateful phase runs them for real.
load_all_checks()  # the registry holds only `not_a_server_error` until the built-in checks are loaded
ALL_CHECKS = CHECKS.get_all()
assert len(ALL_CHECKS) >= 14, [c.__name__ for c in ALL_CHECKS]
# Our loop sends every request of a non-public operation again without credentials and requires a
# refusal: `ignored_auth` (which re-sends each 2xx without, then with invalid credentials) would
# repeat that at twice the cost. The engine's run applies it.
LOOP_CHECKS = [c for c in ALL_CHECKS if c.__name__ != "ignored_auth"]
EMAIL = "owner@schemathesis.example"
# A request the schema allows can still be refused for what the schema cannot say: 400 for an action
# the run's current status does not allow (pausing a cancelled run, `action_not_allowed`), 422 for a
# rule across fields or against stored data (an email address, a workflow's own input schema,
# exactly one of `cron` and `every_ms`, a bulk cancel with no filter). Schemathesis' default list
# for schema-valid requests, plus those two.
EXPECTED_STATUSES: dict[str, Any] = {
    "positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
    },
}
# The credentials are ours to give (a real key or session): generated ones would only be refused,
# and a "negative" case whose only invalid part is the credential we then replace is valid.
NO_CREDENTIALS_GENERATED = {"with-security-parameters": False}
_ENDS_THE_RUN = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/namespaces/{ns_id}")}


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


SAME_ORIGIN = {"Origin": "http://localhost"}


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
    created = http.post(
        f"/api/v1/namespaces/{ns_id}/api-keys",
        json={"name": "fuzz", "role": "read"},
        cookies=as_owner,
        headers=SAME_ORIGIN,
    )
    assert created.status_code == 201, created.text
    read_key_id = created.json()["api_key"]["id"]
    created = http.post(
        f"/api/v1/namespaces/{ns_id}/api-keys",
        json={"name": "fuzz", "role": "admin"},
        cookies=as_owner,
        headers=SAME_ORIGIN,
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
    pushed = http.post(
        "/api/v1/endpoints",
        json={"url": "https://93.184.216.34/aiki", "versions": [["fuzz-push-wf", "1"]], "enabled": False},
        headers=auth,
    )
    assert pushed.status_code == 201, pushed.text
    invited = http.post(
        f"/api/v1/organizations/{org_id}/invitations",
        json={"email": "guest@fuzz.example"},
        cookies=as_owner,
        headers=SAME_ORIGIN,
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
        "endpoint_id": pushed.json()["endpoint"]["id"],
        "name": "go",
    }
    return key, session, ids


@pytest.fixture
def target(db_url: str) -> Iterator[Target]:
    config = IamConfig(
        secret_key=TEST_SECRET,
        base_url="http://localhost",
        secure_cookies=False,
        **RELAXED_LIMITS,
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
    # A session's unsafe requests must come from our origin (aiki.api.auth), as a browser's would.
    return {"X-Aiki-Namespace": t.ids["ns_id"], **SAME_ORIGIN}, {SESSION_COOKIE: session}


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
        _validate(t, case, response, headers, f"{mode.value} {method} {path}")
        if rule(action).scope != "public":
            anonymous = case.call()
            t.calls += 1
            if anonymous.status_code < 400:
                t.failures.append(f"{method} {path} answered {anonymous.status_code} without credentials")
            _validate(t, case, anonymous, {}, f"{mode.value} {method} {path} without credentials")

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): there are no negative cases to send.
        assert mode is GenerationMode.NEGATIVE, f"{method} {path}: no valid request could be generated"


def _validate(t: Target, case: Any, response: Any, headers: dict[str, str], label: str) -> None:
    try:
        case.validate_response(response, checks=LOOP_CHECKS, headers=headers)
    except BaseException as exc:  # one line per failure, all of them reported together
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        t.failures.append(f"{label} -> {response.status_code}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " | ".join(line for line in text.splitlines()[:14] if line.strip())[:1200]


def test_every_operation_survives_generated_requests(target: Target) -> None:
    config = SchemathesisConfig.from_dict({"checks": EXPECTED_STATUSES, "generation": NO_CREDENTIALS_GENERATED})
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", target.app, config=config)
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


# -- the whole schemathesis run, `--checks all` ------------------------------------------------------


def test_schemathesis_run_with_every_check_finds_nothing(target: Target) -> None:
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema

    config = SchemathesisConfig.from_dict(_engine_config(target))
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", target.app, config=config)
    failures: list[str] = []
    errors: list[str] = []
    checked: Counter[str] = Counter()
    phases: dict[str, str] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.status.value
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            for checks in event.recorder.checks.values():
                for check in checks:
                    checked[check.name] += 1
                    if check.failure_info is not None:
                        f = check.failure_info.failure
                        failures.append(f"{check.name} {f.operation}: {f.title} | {f.message[:300]}")
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info}")
        elif isinstance(event, events.FatalError):
            raise AssertionError(f"schemathesis could not run: {event.exception}")
    unique = sorted(set(failures))
    print(f"schemathesis engine: {len(failures)} failures ({len(unique)} unique), {len(errors)} errors")
    print(f"  phases {phases}; checks run {dict(checked)}")
    assert not errors, "\n".join(errors)
    assert not unique, f"{len(unique)} distinct failures:\n" + "\n".join(unique)
    # Every phase ran and every check was applied: a run that tested nothing must not pass.
    assert all(phases[p] == "success" for p in ("coverage", "fuzzing", "stateful")), phases
    assert set(checked) >= {c.__name__ for c in ALL_CHECKS}, set(checked)


def _engine_config(t: Target) -> dict[str, Any]:
    """What ``schemathesis run --checks all`` is given, with each operation's legitimate credentials."""
    operations = []
    for (method, path), action in sorted(t.actions.items()):
        if method in ("HEAD", "OPTIONS") or path.startswith("/schema"):
            continue
        headers, cookies = _credentials(t, method, path, action) if rule(action).scope != "public" else ({}, {})
        if cookies:
            headers = {**headers, "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        operations.append(
            {
                "include-method": method,
                "include-path": path,
                "headers": headers,
                # Ending our session or deleting our namespace would end the exercise early.
                "enabled": (method, path) not in _ENDS_THE_RUN,
            }
        )
    return {
        "seed": 1,
        "workers": 1,
        "generation": {"max-examples": EXAMPLES_PER_MODE, **NO_CREDENTIALS_GENERATED},
        "checks": {"enabled": True, **EXPECTED_STATUSES},
        "parameters": {"path.org_id": t.ids["org_id"], "path.ns_id": t.ids["ns_id"]},
        "operations": operations,
    }
