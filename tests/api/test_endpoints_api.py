"""``/api/v1/endpoints`` and ``/api/v1/runs/{id}/deliveries`` on the in-process IAM harness: the
signing secret shown once, every change audited without it, other tenants' ids not found, roles
refused, hostile input answered 4xx.

Endpoints here point at a public IP literal (the SSRF guard accepts it without resolving) and are
registered for versions no run of which is ready while they are enabled, so nothing is delivered.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aiki.platform.db.tables import endpoint_deliveries, endpoints
from aiki.platform.domain.ids import now_ms
from tests.conftest import AikiHarness
from tests.iam_support import API, IamHarness, Person, rows

PUBLIC_URL = "https://93.184.216.34/api/aiki?token=q-secret-123"
WF, VERSION = "push-api-wf", "1.0.0"
ENDPOINTS = f"{API}/endpoints"


def _create_body(**extra: Any) -> dict[str, Any]:
    return {"url": PUBLIC_URL, "versions": [[WF, VERSION]], "pools": ["fast"], "concurrency": 4, **extra}


async def _team(h: IamHarness, label: str) -> tuple[Person, httpx.AsyncClient]:
    """A person (owner, so namespace admin) and an admin API key of their namespace."""
    person = await h.signup(f"{label}@endpoints.example", organization=label, namespace=f"{label}-ns")
    key = await h.create_key(person, "admin")
    return person, h.key_http(key["key"])


async def _audit(h: IamHarness, person: Person) -> list[dict[str, Any]]:
    resp = await person.http.get(f"{API}/organizations/{person.org_id}/audit", params={"limit": 500})
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["items"] if e["action"].startswith("endpoint.")]


async def test_register_read_change_rotate_delete_and_the_secret_is_shown_once(iam_aiki: IamHarness) -> None:
    alice, api = await _team(iam_aiki, "alice")
    made = await api.post(ENDPOINTS, json=_create_body())
    assert made.status_code == 201, made.text
    body = made.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    ep = body["endpoint"]
    endpoint_id = ep["id"]
    assert ep["url"] == PUBLIC_URL
    assert ep["versions"] == [[WF, VERSION]]
    assert ep["pools"] == ["fast"]
    assert ep["concurrency"] == 4
    assert ep["timeout_ms"] == 30_000
    assert ep["enabled"] is True
    assert ep["health"]["breaker"] == "closed"
    assert secret.startswith(ep["secret_hint"].rstrip("…"))
    assert len(ep["secret_hint"]) < len(secret) / 2

    listed = await api.get(ENDPOINTS)
    got = await api.get(f"{ENDPOINTS}/{endpoint_id}")
    assert listed.status_code == got.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == [endpoint_id]
    assert got.json()["id"] == endpoint_id
    for text in (listed.text, got.text):
        assert secret not in text
        assert 'secret"' not in text.replace('"secret_hint"', "")

    # Stored sealed, never in clear.
    stored = await rows(iam_aiki, sa.select(endpoints))
    assert len(stored) == 1
    assert secret not in json.dumps(stored, default=str)

    changed = await api.patch(f"{ENDPOINTS}/{endpoint_id}", json={"concurrency": 7, "timeout_ms": 5_000})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["concurrency"], changed.json()["timeout_ms"]) == (7, 5_000)
    disabled = await api.patch(f"{ENDPOINTS}/{endpoint_id}", json={"enabled": False})
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    enabled = await api.patch(f"{ENDPOINTS}/{endpoint_id}", json={"enabled": True})
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True

    rotated = await api.post(f"{ENDPOINTS}/{endpoint_id}/rotate-secret", json={"grace_ms": 60_000})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    assert rotated.json()["endpoint"]["previous_secret_expires_at"] is not None
    assert new_secret.startswith(rotated.json()["endpoint"]["secret_hint"].rstrip("…"))
    again = await api.post(f"{ENDPOINTS}/{endpoint_id}/rotate-secret")  # no body: the default grace
    assert again.status_code == 200, again.text
    latest = again.json()["secret"]
    assert new_secret not in (await api.get(f"{ENDPOINTS}/{endpoint_id}")).text

    deliveries = await api.get(f"{ENDPOINTS}/{endpoint_id}/deliveries")
    assert deliveries.status_code == 200
    assert deliveries.json() == {"items": []}

    gone = await api.delete(f"{ENDPOINTS}/{endpoint_id}")
    assert gone.status_code == 204, gone.text
    missing = await api.get(f"{ENDPOINTS}/{endpoint_id}")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["code"] == "endpoint_not_found"
    assert (await api.delete(f"{ENDPOINTS}/{endpoint_id}")).status_code == 404

    # Every change audited, naming the endpoint, without any secret or the URL's query string.
    entries = await _audit(iam_aiki, alice)
    actions = sorted(e["action"] for e in entries)
    assert actions == sorted(
        [
            "endpoint.create",
            "endpoint.update",
            "endpoint.disable",
            "endpoint.enable",
            "endpoint.rotate_secret",
            "endpoint.rotate_secret",
            "endpoint.delete",
            "endpoint.delete",
        ]
    )
    for entry in entries:
        assert entry["target_type"] == "endpoint"
        assert entry["target_id"] == endpoint_id
        for s in (secret, new_secret, latest, "q-secret-123"):
            assert s not in json.dumps(entry)
    outcomes = sorted(e["outcome"] for e in entries if e["action"] == "endpoint.delete")
    assert outcomes == ["failed", "ok"]
    created = next(e for e in entries if e["action"] == "endpoint.create")
    detail = json.loads(created["detail"])
    assert detail["url"] == "https://93.184.216.34/api/aiki"
    assert detail["versions"] == [f"{WF}@{VERSION}"]
    assert detail["status"] == 201


async def test_another_namespace_sees_none_of_them(iam_aiki: IamHarness) -> None:
    alice, api_a = await _team(iam_aiki, "alice")
    bob, api_b = await _team(iam_aiki, "bob")
    made = await api_a.post(ENDPOINTS, json=_create_body())
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["endpoint"]["id"]
    secret = made.json()["secret"]
    bob_session = {"x-aiki-namespace": bob.namespace_id or ""}
    for http, headers in ((api_b, {}), (bob.http, bob_session)):
        listed = await http.get(ENDPOINTS, headers=headers)
        assert listed.status_code == 200
        assert listed.json() == {"items": []}
        for method, path, body in (
            ("GET", f"{ENDPOINTS}/{endpoint_id}", None),
            ("PATCH", f"{ENDPOINTS}/{endpoint_id}", {"enabled": False}),
            ("POST", f"{ENDPOINTS}/{endpoint_id}/rotate-secret", {"grace_ms": 0}),
            ("GET", f"{ENDPOINTS}/{endpoint_id}/deliveries", None),
            ("DELETE", f"{ENDPOINTS}/{endpoint_id}", None),
        ):
            resp = await http.request(method, path, json=body, headers=headers)
            assert resp.status_code == 404, f"{method} {path}: {resp.status_code} {resp.text}"
            assert PUBLIC_URL not in resp.text
    # Bob naming Alice's namespace: not found either.
    resp = await bob.http.get(ENDPOINTS, headers={"x-aiki-namespace": alice.namespace_id or ""})
    assert resp.status_code == 404
    still = await api_a.get(f"{ENDPOINTS}/{endpoint_id}")
    assert still.status_code == 200
    assert still.json()["enabled"] is True
    assert still.json()["secret_hint"] == made.json()["endpoint"]["secret_hint"]
    assert secret not in still.text


async def test_roles_admin_manages_members_viewers_and_read_keys_read_worker_keys_neither(
    iam_aiki: IamHarness,
) -> None:
    alice, api = await _team(iam_aiki, "alice")
    made = await api.post(ENDPOINTS, json=_create_body())
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["endpoint"]["id"]
    ns = {"x-aiki-namespace": alice.namespace_id or ""}
    viewer = await iam_aiki.invite_and_join(alice, "viewer@endpoints.example", namespace_role="viewer")
    member = await iam_aiki.invite_and_join(alice, "member@endpoints.example", namespace_role="member")
    read_key = iam_aiki.key_http((await iam_aiki.create_key(alice, "read"))["key"])
    worker_key = iam_aiki.key_http((await iam_aiki.create_key(alice, "worker"))["key"])
    writes = (
        ("POST", ENDPOINTS, _create_body(versions=[["other-wf", "1"]])),
        ("PATCH", f"{ENDPOINTS}/{endpoint_id}", {"enabled": False}),
        ("POST", f"{ENDPOINTS}/{endpoint_id}/rotate-secret", {"grace_ms": 0}),
        ("DELETE", f"{ENDPOINTS}/{endpoint_id}", None),
    )
    reads = (ENDPOINTS, f"{ENDPOINTS}/{endpoint_id}", f"{ENDPOINTS}/{endpoint_id}/deliveries")
    for who, http, headers in (("viewer", viewer.http, ns), ("member", member.http, ns), ("read key", read_key, {})):
        for path in reads:
            resp = await http.get(path, headers=headers)
            assert resp.status_code == 200, f"{who} GET {path}: {resp.status_code} {resp.text}"
            assert made.json()["secret"] not in resp.text
        for method, path, body in writes:
            resp = await http.request(method, path, json=body, headers=headers)
            assert resp.status_code == 403, f"{who} {method} {path}: {resp.status_code} {resp.text}"
    for path in reads:
        assert (await worker_key.get(path)).status_code == 403
    for method, path, body in writes:
        assert (await worker_key.request(method, path, json=body)).status_code == 403
    # The session admin manages through the API too.
    resp = await alice.http.patch(f"{ENDPOINTS}/{endpoint_id}", json={"enabled": False}, headers=ns)
    assert resp.status_code == 200, resp.text
    after = await api.get(f"{ENDPOINTS}/{endpoint_id}")
    assert after.json()["enabled"] is False
    # The guard refused before any handler ran: no audit row claims those attempts happened.
    entries = await _audit(iam_aiki, alice)
    assert [(e["action"], e["outcome"]) for e in entries] == [("endpoint.disable", "ok"), ("endpoint.create", "ok")]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://10.0.0.7/hook", "private"),
        ("ftp://93.184.216.34/x", "http"),
        ("https://user:pw@93.184.216.34/x", "credentials"),
        ("not a url", ""),
    ],
)
async def test_a_refused_url_is_a_422_naming_the_field(iam_aiki: IamHarness, url: str, reason: str) -> None:
    _, api = await _team(iam_aiki, "alice")
    resp = await api.post(ENDPOINTS, json=_create_body(url=url))
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "validation_error"
    assert problem["field"] == "url"
    assert reason in problem["detail"]
    made = await api.post(ENDPOINTS, json=_create_body())
    endpoint_id = made.json()["endpoint"]["id"]
    changed = await api.patch(f"{ENDPOINTS}/{endpoint_id}", json={"url": url})
    assert changed.status_code == 422
    assert changed.json()["field"] == "url"
    assert (await api.get(ENDPOINTS)).json()["items"][0]["url"] == PUBLIC_URL


async def test_a_version_a_live_worker_serves_is_a_409_naming_it(iam_aiki: IamHarness) -> None:
    _, api = await _team(iam_aiki, "alice")
    reg = await api.post(
        f"{API}/workers/register",
        json={"worker_id": "w-pull", "host": "h", "versions": [{"workflow": "pulled-wf", "version": "2"}]},
    )
    assert reg.status_code == 200, reg.text
    resp = await api.post(ENDPOINTS, json=_create_body(versions=[["pulled-wf", "2"]]))
    assert resp.status_code == 409, resp.text
    assert "pulled-wf" in resp.json()["detail"]
    assert (await api.get(ENDPOINTS)).json() == {"items": []}


@pytest.mark.parametrize(
    ("method", "suffix", "content"),
    [
        ("POST", "", b"{not json"),
        ("POST", "", b"[]"),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "surprise": 1}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "concurrency": 1e400}'),
        (
            "POST",
            "",
            b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "concurrency": 99999999999999999999}',
        ),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "concurrency": 1000000000}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "concurrency": -1}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "timeout_ms": 0}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": []}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["", "1"]]}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a"]]}'),
        ("POST", "", b'{"url": "https://93.184.216.34/", "versions": [["a", "1"]], "pools": "fast"}'),
        ("POST", "", b'{"url": 5, "versions": [["a", "1"]]}'),
        ("POST", "", b'{"url": "https://93.184.216.34/\\u0000", "versions": [["a", "1"]]}'),
        ("POST", "", b'{"url": "https://93.184.216.34/a b", "versions": [["a", "1"]]}'),
        ("POST", "", ('{"url": "https://93.184.216.34/' + "a" * 5000 + '", "versions": [["a", "1"]]}').encode()),
        ("POST", "", ('{"url": "https://93.184.216.34/", "versions": [["' + "w" * 5000 + '", "1"]]}').encode()),
        ("PATCH", "/{id}", b'{"enabled": "yes"}'),
        ("PATCH", "/{id}", b'{"nope": true}'),
        ("PATCH", "/{id}", b'{"timeout_ms": 99999999999}'),
        ("POST", "/{id}/rotate-secret", b'{"grace_ms": -5}'),
        ("POST", "/{id}/rotate-secret", b'{"grace_ms": 999999999999999}'),
        ("POST", "/{id}/rotate-secret", b'{"grace_ms": 1, "extra": 2}'),
        ("GET", "/{id}/deliveries?limit=0", b""),
        ("GET", "/{id}/deliveries?limit=100000", b""),
        ("GET", "/{id}/deliveries?limit=abc", b""),
    ],
)
async def test_hostile_input_is_a_4xx_never_a_500(
    iam_aiki: IamHarness, method: str, suffix: str, content: bytes
) -> None:
    _, api = await _team(iam_aiki, "alice")
    made = await api.post(ENDPOINTS, json=_create_body(enabled=False))
    assert made.status_code == 201, made.text
    path = ENDPOINTS + suffix.replace("{id}", made.json()["endpoint"]["id"])
    resp = await api.request(method, path, content=content, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, f"{resp.status_code} {resp.text}"
    assert resp.headers["content-type"].startswith("application/problem+json")
    after = (await api.get(ENDPOINTS)).json()["items"]
    assert len(after) == 1
    assert after[0]["url"] == PUBLIC_URL
    assert after[0]["enabled"] is False


async def _insert_attempts(h: IamHarness, ns: str, endpoint_id: str, run_id: str) -> None:
    now = now_ms()
    async with h.server.db.engine.begin() as conn:
        for attempt, outcome, status, latency, error in (
            (1, "http_error", 500, 35, "HTTP 500: boom"),
            (2, "timeout", None, 30_000, "no answer within 30 s"),
            (3, "completed", 200, 12, None),
        ):
            await conn.execute(
                sa.insert(endpoint_deliveries).values(
                    namespace_id=ns,
                    endpoint_id=endpoint_id,
                    run_id=run_id,
                    revision=attempt,
                    attempt=attempt,
                    outcome=outcome,
                    status_code=status,
                    latency_ms=latency,
                    error=error,
                    created_at=now + attempt,
                )
            )


async def test_deliveries_of_an_endpoint_and_of_a_run(iam_aiki: IamHarness) -> None:
    alice, api = await _team(iam_aiki, "alice")
    _, api_b = await _team(iam_aiki, "bob")
    # Disabled: the run stays queued, nothing is delivered; its attempts are written here.
    made = await api.post(ENDPOINTS, json=_create_body(enabled=False, pools=[]))
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["endpoint"]["id"]
    started = await api.post(f"{API}/runs", json={"workflow": WF, "version": VERSION, "input": 1})
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    await _insert_attempts(iam_aiki, alice.namespace_id or "", endpoint_id, run_id)

    by_run = await api.get(f"{API}/runs/{run_id}/deliveries")
    assert by_run.status_code == 200, by_run.text
    items = by_run.json()["items"]
    assert sorted(i["attempt"] for i in items) == [1, 2, 3]
    first = next(i for i in items if i["attempt"] == 1)
    assert first["outcome"] == "http_error"
    assert first["status_code"] == 500
    assert first["latency_ms"] == 35
    assert first["error"] == "HTTP 500: boom"
    assert first["endpoint_id"] == endpoint_id
    assert first["run_id"] == run_id
    timeout = next(i for i in items if i["attempt"] == 2)
    assert "status_code" not in timeout  # omitted when there was no answer

    by_endpoint = await api.get(f"{ENDPOINTS}/{endpoint_id}/deliveries", params={"limit": 2})
    assert by_endpoint.status_code == 200, by_endpoint.text
    assert [i["attempt"] for i in by_endpoint.json()["items"]] == [3, 2]  # newest first

    got = (await api.get(f"{ENDPOINTS}/{endpoint_id}")).json()
    assert got["health"]["deliveries_last_hour"] == 3
    assert got["health"]["failures_last_hour"] == 2

    # Another tenant: not A's run, not A's attempts.
    foreign = await api_b.get(f"{API}/runs/{run_id}/deliveries")
    assert foreign.status_code in (200, 404), foreign.text
    assert "boom" not in foreign.text
    assert endpoint_id not in foreign.text
    if foreign.status_code == 200:
        assert foreign.json() == {"items": []}
    viewer = await iam_aiki.invite_and_join(alice, "v@endpoints.example", namespace_role="viewer")
    seen = await viewer.http.get(
        f"{API}/runs/{run_id}/deliveries", headers={"x-aiki-namespace": alice.namespace_id or ""}
    )
    assert seen.status_code == 200
    assert len(seen.json()["items"]) == 3


async def test_without_a_secret_key_endpoints_cannot_be_registered(aiki: AikiHarness) -> None:
    if aiki.server.services.secret_box is not None:
        pytest.skip("this environment gives the server a secret key")
    resp = await aiki.http.post(ENDPOINTS, json=_create_body())
    assert 400 <= resp.status_code < 500 or resp.status_code == 503, resp.text
    problem = resp.json()
    assert problem["code"] == "secret_key_required"
    assert "secret" in problem["detail"].lower()
    assert (await aiki.http.get(ENDPOINTS)).json() == {"items": []}
