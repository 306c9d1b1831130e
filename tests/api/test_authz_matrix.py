"""The authorization matrix: every route of the app, every kind of wrong credential, 0 successes.

The route list comes from the Litestar app itself; a route without a row in ``ROWS`` fails
``test_every_route_has_a_row``. Expectations are derived from the action each handler declares
(``opt=policy("runs:read")``, see ``aiki.api.auth``) and the rule of that action
(``aiki.iam.policy.ACTIONS``), so adding a route means adding one ``ROWS`` entry: a request body
the legitimate caller would send (and, for a new path parameter, a value in ``World.path_values``).

Cases, each against organization A's resources (namespace ``a1``):

* no credentials, a malformed key, a revoked key, an expired key: ``401``;
* a key of organization B: ``404`` for anything named by id (another tenant's ids do not exist),
  ``403`` where a key may never act (organizations, people), and on routes without ids it acts in
  its own namespace and must see none of A's records;
* a session of organization B naming A's namespace or organization: ``404``;
* a ``read`` key of A, and a ``viewer`` session of A, on every write: ``403``;
* and a positive control: A's legitimate caller is not refused (so each refusal above is the
  guard's doing, not a bad request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from aiki.api.app import create_app
from aiki.api.auth import declared_action
from aiki.iam.config import IamConfig
from aiki.iam.context import Iam
from aiki.iam.policy import Rule, rule
from aiki.platform.db.engine import Database
from aiki.platform.services.context import Services
from tests.iam_support import API, BASE_URL, PASSWORD, RELAXED_LIMITS, TEST_SECRET, IamHarness, Person

WORKFLOW = "matrix-wf"
VERSION = "1.0.0"
A_SECRET_INPUT = "A-ONLY-INPUT-7f3a"
SAFE = frozenset({"GET", "HEAD"})
INVITEE = "invitee@a.example"
DASHBOARD = "/ui"
PUSH_WORKFLOW = "matrix-push-wf"
PUSH_URL = "https://93.184.216.34/aiki"


def _app() -> Litestar:
    db = Database("sqlite+aiosqlite:///:memory:", migrate=False)
    return create_app(Services(db), iam=Iam(db, IamConfig(secret_key=TEST_SECRET, base_url=BASE_URL, **RELAXED_LIMITS)))


def unverified_ok_routes(app: Litestar) -> set[tuple[str, str]]:
    """Routes a person who has not verified their email may use (``policy(..., unverified_ok=True)``)."""
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and not route.path.startswith(DASHBOARD)
        for handler in route.route_handlers
        if handler.opt.get("unverified_ok")
        for method in handler.http_methods
    }


def app_routes(app: Litestar) -> dict[tuple[str, str], str | None]:
    """``(method, path) -> declared action`` for every route the app serves (automatic OPTIONS aside)."""
    routes: dict[tuple[str, str], str | None] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        if route.path == DASHBOARD or route.path.startswith(DASHBOARD + "/"):
            # Dashboard pages declare actions from the same policy table; their refusals are HTML
            # (a redirect to the login page, an error page) and are tested in tests/dashboard.
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                if method == "OPTIONS":  # Litestar's automatic answer: allowed methods, no data
                    continue
                routes[(method, route.path)] = declared_action(handler, route.path, method)
    return routes


@dataclass(frozen=True)
class Row:
    """How the legitimate caller uses a route: its JSON body and query string."""

    body: Callable[[World], Any] | None = None
    query: dict[str, str] = field(default_factory=dict)


def _register(_: World) -> dict[str, Any]:
    return {"worker_id": "w-matrix", "host": "h", "versions": [{"workflow": WORKFLOW, "version": VERSION}]}


def _record_task(_: World) -> dict[str, Any]:
    return {"revision": 1, "address": "t:0", "seq": 1, "name": "t", "status": "completed", "attempts": 1}


def _schedule(w: World) -> dict[str, Any]:
    return {"workflow": WORKFLOW, "version": VERSION, "input": {"n": 2}, "every_ms": 3_600_000}


def _endpoint(_: World) -> dict[str, Any]:
    # Disabled, for a version no run of which is ready: nothing is delivered to it.
    return {"url": PUSH_URL, "versions": [[PUSH_WORKFLOW, VERSION]], "enabled": False}


ROWS: dict[tuple[str, str], Row] = {
    # public
    ("GET", "/health"): Row(),
    ("GET", "/ready"): Row(),
    ("GET", "/schema"): Row(),
    ("GET", "/schema/openapi.json"): Row(),
    ("GET", "/schema/{path:str}"): Row(),
    # the dashboard's front door and the invitation link (redirects into /ui, tested in tests/dashboard)
    ("GET", "/"): Row(),
    ("GET", "/invitations/accept"): Row(query={"token": "x"}),
    ("POST", "/api/v1/auth/signup"): Row(lambda w: {"email": "newcomer@example.com", "password": PASSWORD}),
    ("POST", "/api/v1/auth/login"): Row(lambda w: {"email": w.alice.email, "password": PASSWORD}),
    # mailed links (tests/iam/test_email_verification.py follows real ones)
    ("POST", "/api/v1/auth/verify-email"): Row(lambda w: {"token": "not-a-mailed-token"}),
    ("POST", "/api/v1/auth/password/forgot"): Row(lambda w: {"email": w.alice.email}),
    ("POST", "/api/v1/auth/password/reset"): Row(lambda w: {"token": "not-a-mailed-token", "password": PASSWORD}),
    ("POST", "/api/v1/auth/verify-email/resend"): Row(),
    # OIDC (not configured in this world: tests/iam/test_oidc_login.py drives them against a provider)
    ("GET", "/api/v1/auth/oidc/login"): Row(query={"return_to": "/runs"}),
    ("GET", "/api/v1/auth/oidc/callback"): Row(query={"state": "s", "code": "c"}),
    # the signed-in person
    ("POST", "/api/v1/auth/logout"): Row(),
    ("GET", "/api/v1/auth/me"): Row(),
    ("GET", "/api/v1/organizations"): Row(),
    ("POST", "/api/v1/organizations"): Row(lambda w: {"name": "Another"}),
    ("POST", "/api/v1/invitations/accept"): Row(lambda w: {"token": w.invitation_token}),
    # organizations
    ("GET", "/api/v1/organizations/{org_id:str}"): Row(),
    ("GET", "/api/v1/organizations/{org_id:str}/members"): Row(),
    ("PATCH", "/api/v1/organizations/{org_id:str}/members/{user_id:str}"): Row(lambda w: {"role": "admin"}),
    ("DELETE", "/api/v1/organizations/{org_id:str}/members/{user_id:str}"): Row(),
    ("GET", "/api/v1/organizations/{org_id:str}/invitations"): Row(),
    ("POST", "/api/v1/organizations/{org_id:str}/invitations"): Row(lambda w: {"email": "new@example.com"}),
    ("DELETE", "/api/v1/organizations/{org_id:str}/invitations/{invitation_id:str}"): Row(),
    ("GET", "/api/v1/organizations/{org_id:str}/namespaces"): Row(),
    ("POST", "/api/v1/organizations/{org_id:str}/namespaces"): Row(lambda w: {"name": "staging"}),
    ("GET", "/api/v1/organizations/{org_id:str}/audit"): Row(),
    # namespaces, members, keys
    ("GET", "/api/v1/namespaces/{ns_id:str}"): Row(),
    ("DELETE", "/api/v1/namespaces/{ns_id:str}"): Row(),
    ("GET", "/api/v1/namespaces/{ns_id:str}/members"): Row(),
    ("PUT", "/api/v1/namespaces/{ns_id:str}/members/{user_id:str}"): Row(lambda w: {"role": "member"}),
    ("DELETE", "/api/v1/namespaces/{ns_id:str}/members/{user_id:str}"): Row(),
    ("GET", "/api/v1/namespaces/{ns_id:str}/api-keys"): Row(),
    ("POST", "/api/v1/namespaces/{ns_id:str}/api-keys"): Row(lambda w: {"name": "k", "role": "read"}),
    ("DELETE", "/api/v1/namespaces/{ns_id:str}/api-keys/{key_id:str}"): Row(),
    # runs
    ("POST", "/api/v1/runs"): Row(lambda w: {"workflow": WORKFLOW, "version": VERSION, "input": {"n": 1}}),
    ("GET", "/api/v1/runs"): Row(),
    ("GET", "/api/v1/runs/{run_id:str}"): Row(),
    ("GET", "/api/v1/runs/{run_id:str}/history"): Row(),
    ("POST", "/api/v1/runs/{run_id:str}/events/{name:str}"): Row(lambda w: {"data": None}),
    ("POST", "/api/v1/runs/{run_id:str}/cancel"): Row(lambda w: {"reason": "matrix"}),
    ("POST", "/api/v1/runs/{run_id:str}/pause"): Row(lambda w: {"reason": "matrix"}),
    ("POST", "/api/v1/runs/{run_id:str}/resume"): Row(lambda w: {"reason": "matrix"}),
    ("POST", "/api/v1/runs/{run_id:str}/wake"): Row(lambda w: {"reason": "matrix"}),
    ("POST", "/api/v1/runs/{run_id:str}/requeue"): Row(lambda w: {"reason": "matrix"}),
    ("GET", "/api/v1/runs/{run_id:str}/detail"): Row(),
    ("POST", "/api/v1/runs/cancel"): Row(lambda w: {"workflow": WORKFLOW, "reason": "matrix"}),
    ("GET", "/api/v1/workers"): Row(),
    ("GET", "/api/v1/workflows"): Row(),
    # schedules
    ("POST", "/api/v1/schedules"): Row(_schedule),
    ("GET", "/api/v1/schedules"): Row(),
    ("GET", "/api/v1/schedules/{schedule_id:str}"): Row(),
    ("POST", "/api/v1/schedules/{schedule_id:str}/pause"): Row(),
    ("POST", "/api/v1/schedules/{schedule_id:str}/resume"): Row(),
    ("DELETE", "/api/v1/schedules/{schedule_id:str}"): Row(),
    # push endpoints
    ("GET", "/api/v1/endpoints"): Row(),
    ("POST", "/api/v1/endpoints"): Row(_endpoint),
    ("GET", "/api/v1/endpoints/{endpoint_id:str}"): Row(),
    ("PATCH", "/api/v1/endpoints/{endpoint_id:str}"): Row(lambda w: {"concurrency": 3}),
    ("DELETE", "/api/v1/endpoints/{endpoint_id:str}"): Row(),
    ("POST", "/api/v1/endpoints/{endpoint_id:str}/rotate-secret"): Row(lambda w: {"grace_ms": 0}),
    ("GET", "/api/v1/endpoints/{endpoint_id:str}/deliveries"): Row(),
    ("GET", "/api/v1/runs/{run_id:str}/deliveries"): Row(),
    # worker protocol
    ("POST", "/api/v1/workers/register"): Row(_register),
    ("POST", "/api/v1/workers/claim"): Row(
        lambda w: {"worker_id": "w-matrix", "versions": [[WORKFLOW, VERSION]], "max_runs": 0, "wait_ms": 0}
    ),
    ("POST", "/api/v1/workers/heartbeat"): Row(lambda w: {"worker_id": "w-matrix", "runs": [[w.run_a, 1]]}),
    ("POST", "/api/v1/workers/release"): Row(lambda w: {"worker_id": "w-matrix", "runs": [[w.run_a, 1]]}),
    ("POST", "/api/v1/workers/watch"): Row(lambda w: {"worker_id": "w-matrix", "runs": [[w.run_a, 1]], "wait_ms": 0}),
    ("POST", "/api/v1/runs/{run_id:str}/tasks"): Row(_record_task),
    ("POST", "/api/v1/runs/{run_id:str}/transition"): Row(lambda w: {"revision": 1, "kind": "complete"}),
    ("POST", "/api/v1/workers/commands"): Row(
        lambda w: {"commands": [{"kind": "record_task", "run_id": w.run_a, **_record_task(w)}]}
    ),
    ("POST", "/api/v1/runs/{run_id:str}/children"): Row(
        lambda w: {"revision": 1, "address": "child:x", "seq": 0, "workflow": WORKFLOW, "version": VERSION}
    ),
}

ROUTES = app_routes(_app())
UNVERIFIED_OK = unverified_ok_routes(_app())


@dataclass
class World:
    """Two organizations. A: owner alice, viewer victor, keys of every kind; B: owner bob, an admin key."""

    h: IamHarness
    alice: Person
    victor: Person
    bob: Person
    keys: dict[str, str]
    key_ids: dict[str, str]
    run_a: str
    run_b: str
    invitation_id: str
    invitation_token: str
    schedule_a: str
    endpoint_a: str

    @property
    def org_a(self) -> str:
        assert self.alice.org_id is not None
        return self.alice.org_id

    @property
    def ns_a(self) -> str:
        assert self.alice.namespace_id is not None
        return self.alice.namespace_id

    def path_values(self) -> dict[str, str]:
        """A value of A for each path parameter; a route with a new parameter adds it here."""
        return {
            "org_id": self.org_a,
            "ns_id": self.ns_a,
            "run_id": self.run_a,
            "user_id": self.victor.user_id,
            "invitation_id": self.invitation_id,
            "schedule_id": self.schedule_a,
            "endpoint_id": self.endpoint_a,
            "key_id": self.key_ids["read"],
            "name": "go",
            "path": "openapi.json",
        }

    def markers(self) -> list[str]:
        """Strings only A's records contain: none may appear in a 2xx answer to someone outside A."""
        return [
            self.org_a,
            self.ns_a,
            self.run_a,
            self.schedule_a,
            self.endpoint_a,
            A_SECRET_INPUT,
            self.alice.email,
            self.victor.email,
            *self.key_ids.values(),
        ]


async def build_world(h: IamHarness) -> World:
    alice = await h.signup("alice@a.example", organization="A", namespace="a1")
    victor = await h.invite_and_join(alice, "victor@a.example", namespace_role="viewer")
    bob = await h.signup("bob@b.example", organization="B", namespace="b1")
    keys: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    for name, role, person, extra in (
        ("admin", "admin", alice, {}),
        ("read", "read", alice, {}),
        ("worker", "worker", alice, {}),
        ("revoked", "admin", alice, {}),
        ("expired", "admin", alice, {"expires_at": h.iam.now() + 60_000}),
        ("b_admin", "admin", bob, {}),
    ):
        created = await h.create_key(person, role, **extra)
        keys[name], key_ids[name] = created["key"], created["api_key"]["id"]
    revoke = await alice.http.delete(f"{API}/namespaces/{alice.namespace_id}/api-keys/{key_ids['revoked']}")
    assert revoke.status_code == 200, revoke.text
    version = {"workflow": WORKFLOW, "version": VERSION, "event_schemas": {"go": None}}
    run_ids = []
    for key, secret in ((keys["admin"], A_SECRET_INPUT), (keys["b_admin"], "b-input")):
        http = h.key_http(key)
        reg = await http.post(f"{API}/workers/register", json={"worker_id": "w0", "host": "h", "versions": [version]})
        assert reg.status_code == 200, reg.text
        started = await http.post(
            f"{API}/runs", json={"workflow": WORKFLOW, "version": VERSION, "input": {"secret": secret}}
        )
        assert started.status_code == 201, started.text
        run_ids.append(started.json()["run"]["id"])
    scheduled = await h.key_http(keys["admin"]).post(
        f"{API}/schedules", json={"workflow": WORKFLOW, "version": VERSION, "input": {"n": 1}, "every_ms": 3_600_000}
    )
    assert scheduled.status_code == 201, scheduled.text
    pushed = await h.key_http(keys["admin"]).post(
        f"{API}/endpoints", json={"url": PUSH_URL, "versions": [[PUSH_WORKFLOW, VERSION]], "enabled": False}
    )
    assert pushed.status_code == 201, pushed.text
    invited = await alice.http.post(f"{API}/organizations/{alice.org_id}/invitations", json={"email": INVITEE})
    assert invited.status_code == 201, invited.text
    h.advance(120_000)  # the `expired` key's expiry passes
    return World(
        h=h,
        alice=alice,
        victor=victor,
        bob=bob,
        keys=keys,
        key_ids=key_ids,
        run_a=run_ids[0],
        run_b=run_ids[1],
        invitation_id=invited.json()["invitation"]["id"],
        invitation_token=invited.json()["token"],
        schedule_a=scheduled.json()["schedule"]["id"],
        endpoint_a=pushed.json()["endpoint"]["id"],
    )


def _fill(path: str, values: dict[str, str]) -> str:
    out = path
    for name, value in values.items():
        out = out.replace(f"{{{name}:str}}", value)
    assert "{" not in out, f"{path}: add its path parameter to World.path_values"
    return out


async def _call(
    w: World, method: str, path: str, *, headers: dict[str, str] | None = None, http: httpx.AsyncClient | None = None
) -> httpx.Response:
    row = ROWS[(method, path)]
    client = http or w.h.new_http()
    body = row.body(w) if row.body else None
    return await client.request(
        method, _fill(path, w.path_values()), json=body, params=row.query or None, headers=headers or {}
    )


def _negative_cases(w: World) -> dict[str, tuple[httpx.AsyncClient, dict[str, str]]]:
    h = w.h
    ns_header = {"x-aiki-namespace": w.ns_a}
    return {
        "no credentials": (h.new_http(), {}),
        "malformed key": (h.key_http("aiki_notakey_xxxxxxxx"), {}),
        "revoked key": (h.key_http(w.keys["revoked"]), {}),
        "expired key": (h.key_http(w.keys["expired"]), {}),
        "other namespace's key": (h.key_http(w.keys["b_admin"]), {}),
        "other organization's session": (w.bob.http, ns_header),
        "read key": (h.key_http(w.keys["read"]), {}),
        "viewer session": (w.victor.http, ns_header),
    }


def expected(case: str, r: Rule, method: str, path: str) -> set[int] | None:
    """The statuses allowed for ``case`` on this route; ``None`` when the case does not apply."""
    if r.scope == "public":
        return None
    write = method not in SAFE
    names_an_id = "{" in path
    if case in ("no credentials", "malformed key", "revoked key", "expired key"):
        return {401}
    if case == "other namespace's key":
        if r.scope == "user":
            return {403}
        if r.scope == "organization":
            return {404}
        return {404} if names_an_id else None  # acts in its own namespace: checked for leaks instead
    if case == "other organization's session":
        return None if r.scope == "user" else {404}
    if case in ("read key", "viewer session"):
        if not write or (r.scope == "user" and case == "viewer session"):
            return None
        return {403}
    raise AssertionError(case)


def test_every_route_has_a_row() -> None:
    missing = sorted(set(ROUTES) - set(ROWS))
    assert not missing, f"routes without a row in the authorization matrix: {missing}"
    stale = sorted(set(ROWS) - set(ROUTES))
    assert not stale, f"matrix rows for routes the app no longer serves: {stale}"


def test_every_route_declares_an_action_that_matches_its_method() -> None:
    undeclared = sorted(k for k, action in ROUTES.items() if action is None)
    assert not undeclared, f"routes that declare no policy (opt=policy(...)): {undeclared}"
    for (method, path), action in ROUTES.items():
        assert action is not None
        r = rule(action)
        if r.scope in ("namespace", "organization"):
            assert r.write == (method not in SAFE), f"{method} {path} declares {action!r}"


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES), ids=lambda v: str(v))
async def test_route_refuses_every_wrong_caller(iam_aiki: IamHarness, method: str, path: str) -> None:
    assert (method, path) in ROWS, "see test_every_route_has_a_row"
    w = await build_world(iam_aiki)
    action = ROUTES[(method, path)]
    assert action is not None
    r = rule(action)
    failures = []
    for case, (http, headers) in _negative_cases(w).items():
        allowed = expected(case, r, method, path)
        resp = await _call(w, method, path, headers=headers, http=http)
        if allowed is not None and resp.status_code not in allowed:
            failures.append(f"{case}: {resp.status_code} (expected {sorted(allowed)}) {resp.text[:200]}")
        if resp.status_code < 300 and r.scope != "public":
            # Echoing an id the caller itself sent reveals nothing; anything else of A does.
            sent = str(resp.request.url) + resp.request.content.decode()
            leaked = [m for m in w.markers() if m in resp.text and m not in sent]
            if leaked and case in ("other namespace's key", "other organization's session"):
                failures.append(f"{case}: answered {resp.status_code} with A's records {leaked}")
    assert not failures, "\n".join(failures)

    # The positive control: A's legitimate caller gets through the guard.
    if r.scope == "public":
        http, headers = w.h.new_http(), {}
    elif r.scope == "namespace" and "admin" in r.key_roles:
        http, headers = w.h.key_http(w.keys["admin"]), {}
    else:
        http, headers = w.alice.http, {"x-aiki-namespace": w.ns_a}
    if (method, path) == ("POST", "/api/v1/invitations/accept"):
        http = (await w.h.signup(INVITEE)).http  # the one the invitation was sent to
    resp = await _call(w, method, path, headers=headers, http=http)
    assert resp.status_code < 500, resp.text
    if resp.status_code == 404 and resp.json().get("code") == "oidc_not_configured":
        return  # a feature this world has off, said so by the route itself (not the guard)
    assert resp.status_code not in (401, 403, 404), f"legitimate caller refused: {resp.status_code} {resp.text}"


async def test_list_endpoints_return_no_foreign_records(iam_aiki: IamHarness) -> None:
    w = await build_world(iam_aiki)
    b_key = w.h.key_http(w.keys["b_admin"])
    runs = await b_key.get(f"{API}/runs")
    assert runs.status_code == 200
    assert [r["id"] for r in runs.json()["items"]] == [w.run_b]
    bob_orgs = (await w.bob.http.get(f"{API}/organizations")).json()
    assert [o["name"] for o in bob_orgs] == ["B"]
    # A's admin key sees A's run only.
    a_runs = (await w.h.key_http(w.keys["admin"]).get(f"{API}/runs")).json()["items"]
    assert [r["id"] for r in a_runs] == [w.run_a]


async def test_an_unverified_session_reaches_only_me_logout_and_resend(iam_aiki: IamHarness) -> None:
    """Issue 11: until the address is verified, every route that is not public answers 403 email_unverified."""
    w = await build_world(iam_aiki)
    signed = await w.h.new_http().post(f"{API}/auth/signup", json={"email": "squat@a.example", "password": PASSWORD})
    assert signed.status_code == 202, signed.text
    assert {
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/verify-email/resend"),
    } == UNVERIFIED_OK
    failures = []
    for (method, path), action in sorted(ROUTES.items()):
        assert action is not None
        if rule(action).scope == "public" or (method, path) in UNVERIFIED_OK:
            continue
        http = await w.h.login("squat@a.example")
        resp = await _call(w, method, path, headers={"x-aiki-namespace": w.ns_a}, http=http)
        if resp.status_code != 403 or resp.json().get("code") != "email_unverified":
            failures.append(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
    assert not failures, "\n".join(failures)
    http = await w.h.login("squat@a.example")
    for method, path in sorted(UNVERIFIED_OK, key=lambda k: k[1].endswith("/logout")):  # logout last
        resp = await _call(w, method, path, http=http)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
