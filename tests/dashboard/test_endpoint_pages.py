"""The Endpoints pages over HTTP (no browser): register (the secret shown once, with the mount
code), errors in the form, enable/disable, rotate, delete, the audit rows; read-only for viewers;
another organization's endpoint does not exist; a run's page lists its deliveries."""

from __future__ import annotations

import re

import sqlalchemy as sa

from aiki.platform.db.tables import endpoint_deliveries
from aiki.platform.domain.ids import now_ms
from tests.dashboard.support import ORIGIN, UI, Browser, csrf_of, signup
from tests.iam_support import API, IamHarness

PUBLIC_URL = "https://93.184.216.34/api/aiki"
_SECRET = re.compile(r'<code id="endpoint-secret">(whsec_[A-Za-z0-9+/=]+)</code>')


def _endpoints(b: Browser) -> str:
    return f"{UI}/ns/{b.namespace_id}/endpoints"


async def _register(b: Browser, **fields: str) -> tuple[str, str]:
    """Register through the form; the endpoint's id and its secret as the page shows them."""
    data = {"url": PUBLIC_URL, "versions": "pages-wf@1\npages-wf@2", "pools": "", "concurrency": "3", "timeout_s": "20"}
    data.update(fields)
    resp = await b.post(_endpoints(b), data)
    assert resp.status_code == 200, resp.text
    secret = _SECRET.search(resp.text)
    assert secret, resp.text
    found = re.search(r'data-endpoint-id="([^"]+)"', resp.text)
    assert found
    return found.group(1), secret.group(1)


async def test_an_admin_registers_and_sees_the_secret_once_with_the_mount_code(iam_aiki: IamHarness) -> None:
    admin = await signup(iam_aiki, "admin@ep-pages.example", organization="EP")
    empty = await admin.http.get(_endpoints(admin))
    assert empty.status_code == 200
    assert "No endpoints yet" in empty.text
    assert 'id="register-endpoint"' in empty.text
    assert f'href="{_endpoints(admin)}">Endpoints</a>' in empty.text  # the nav link

    endpoint_id, secret = await _register(admin)
    page = await admin.http.get(_endpoints(admin))
    assert endpoint_id in page.text
    assert PUBLIC_URL in page.text
    assert "pages-wf@1" in page.text
    assert "pages-wf@2" in page.text
    assert secret not in page.text  # shown once
    assert secret[:12] in page.text  # its hint tells secrets apart

    made = await admin.post(_endpoints(admin), {"url": PUBLIC_URL, "versions": "pages-other@1"})
    assert "from aiki import client, endpoint" in made.text
    assert "client=client(url=&#34;http://aiki&#34;" in made.text or 'client=client(url="http://aiki"' in made.text
    assert "AIKI_ENDPOINT_SECRET" in made.text
    assert "AIKI_API_KEY" in made.text
    # The snippet reads the secret from the environment: the secret appears once, in its own box.
    shown = _SECRET.search(made.text)
    assert shown
    assert made.text.count(shown.group(1)) == 1

    detail = await admin.http.get(f"{_endpoints(admin)}/{endpoint_id}")
    assert detail.status_code == 200
    assert "Nothing delivered yet" in detail.text
    assert secret not in detail.text


async def test_form_errors_show_in_the_form_not_as_json(iam_aiki: IamHarness) -> None:
    admin = await signup(iam_aiki, "errors@ep-pages.example", organization="EP")
    for fields, words in (
        ({"url": "http://127.0.0.1:9/hook", "versions": "a@1"}, "loopback"),
        ({"url": "http://169.254.169.254/", "versions": "a@1"}, "metadata"),
        ({"url": PUBLIC_URL, "versions": "no-version-here"}, "workflow@version"),
        ({"url": PUBLIC_URL, "versions": ""}, "at least one"),
        ({"url": PUBLIC_URL, "versions": "a@1", "concurrency": "lots"}, "concurrency"),
        ({"url": PUBLIC_URL, "versions": "a@1", "concurrency": "0"}, "concurrency"),
        ({"url": PUBLIC_URL, "versions": "a@1", "timeout_s": "99999"}, "timeout"),
    ):
        resp = await admin.post(_endpoints(admin), fields)
        assert resp.status_code == 422, (fields, resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("text/html")
        assert 'role="alert">' in resp.text, fields
        assert words in resp.text, (fields, resp.text)
        assert 'id="endpoint-secret"' not in resp.text
        assert fields["url"] in resp.text  # the form keeps what was typed
    assert "No endpoints yet" in (await admin.http.get(_endpoints(admin))).text


async def test_disable_enable_rotate_delete_and_the_audit_log(iam_aiki: IamHarness) -> None:
    admin = await signup(iam_aiki, "ops@ep-pages.example", organization="EP")
    endpoint_id, secret = await _register(admin)
    base = f"{_endpoints(admin)}/{endpoint_id}"

    off = await admin.post(f"{base}/disable", {"back": "detail"})
    assert off.status_code == 303
    assert off.headers["location"] == base
    assert 'data-enabled="no"' in (await admin.http.get(base)).text
    on = await admin.post(f"{base}/enable")
    assert on.status_code == 303
    assert on.headers["location"] == _endpoints(admin)
    assert 'data-enabled="yes"' in (await admin.http.get(base)).text

    rotated = await admin.post(f"{base}/rotate-secret", {"grace_hours": "1"})
    assert rotated.status_code == 200, rotated.text
    new_secret = _SECRET.search(rotated.text)
    assert new_secret
    assert new_secret.group(1) != secret
    assert "previous secret stays valid until" in rotated.text
    assert new_secret.group(1) not in (await admin.http.get(base)).text
    bad_grace = await admin.post(f"{base}/rotate-secret", {"grace_hours": "-3"})
    assert bad_grace.status_code == 422
    assert "grace" in bad_grace.text

    gone = await admin.post(f"{base}/delete")
    assert gone.status_code == 303
    assert gone.headers["location"] == _endpoints(admin)
    assert (await admin.http.get(base)).status_code == 404
    assert "No endpoints yet" in (await admin.http.get(_endpoints(admin))).text

    org = re.search(r"/ui/orgs/([^/]+)/members", (await admin.http.get(_endpoints(admin))).text)
    assert org
    log = await admin.http.get(f"{API}/organizations/{org.group(1)}/audit", params={"limit": 500})
    entries = [e for e in log.json()["items"] if e["action"].startswith("endpoint.")]
    assert [(e["action"], e["outcome"]) for e in reversed(entries)] == [
        ("endpoint.create", "ok"),
        ("endpoint.disable", "ok"),
        ("endpoint.enable", "ok"),
        ("endpoint.rotate_secret", "ok"),
        ("endpoint.rotate_secret", "failed"),
        ("endpoint.delete", "ok"),
    ]
    assert all(e["target_id"] == endpoint_id for e in entries)
    assert secret not in log.text
    assert new_secret.group(1) not in log.text


async def test_a_viewer_reads_without_controls_and_is_refused_every_change(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@ep-pages.example")
    admin = Browser(owner.http, owner.namespace_id or "", owner.email)
    endpoint_id, _ = await _register(admin)
    for role in ("viewer", "member"):
        person = await iam_aiki.invite_and_join(owner, f"{role}@ep-pages.example", namespace_role=role)
        reader = Browser(person.http, owner.namespace_id or "", person.email)
        page = await reader.http.get(_endpoints(reader))
        assert page.status_code == 200
        assert endpoint_id in page.text
        assert 'id="register-endpoint"' not in page.text
        assert "data-action=" not in page.text
        detail = await reader.http.get(f"{_endpoints(reader)}/{endpoint_id}")
        assert detail.status_code == 200
        assert 'id="endpoint-actions"' not in detail.text
        token = csrf_of(page.text)
        for path, data in (
            (_endpoints(reader), {"url": PUBLIC_URL, "versions": "x@1"}),
            (f"{_endpoints(reader)}/{endpoint_id}/disable", {}),
            (f"{_endpoints(reader)}/{endpoint_id}/rotate-secret", {}),
            (f"{_endpoints(reader)}/{endpoint_id}/delete", {}),
        ):
            resp = await reader.http.post(path, data={"_csrf": token, **data}, headers=ORIGIN)
            assert resp.status_code == 403, (role, path, resp.status_code)
    still = await admin.http.get(f"{_endpoints(admin)}/{endpoint_id}")
    assert still.status_code == 200
    assert 'data-enabled="yes"' in still.text


async def test_another_organizations_endpoint_does_not_exist(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "alice@ep-pages.example")
    bob = await signup(iam_aiki, "bob@ep-pages.example")
    endpoint_id, _ = await _register(alice)
    for path in (_endpoints(alice), f"{_endpoints(alice)}/{endpoint_id}"):
        resp = await bob.http.get(path)
        assert resp.status_code == 404
        assert PUBLIC_URL not in resp.text
    # Bob's own namespace, Alice's endpoint id: not found either.
    resp = await bob.http.get(f"{_endpoints(bob)}/{endpoint_id}")
    assert resp.status_code == 404
    assert PUBLIC_URL not in resp.text
    token = await bob.csrf()
    for verb in ("disable", "delete", "rotate-secret"):
        resp = await bob.http.post(f"{_endpoints(bob)}/{endpoint_id}/{verb}", data={"_csrf": token}, headers=ORIGIN)
        assert resp.status_code == 404, verb
    assert 'data-enabled="yes"' in (await alice.http.get(f"{_endpoints(alice)}/{endpoint_id}")).text


async def test_a_run_page_lists_its_deliveries(iam_aiki: IamHarness) -> None:
    admin = await signup(iam_aiki, "runs@ep-pages.example")
    # Disabled: its run stays queued; the attempts are written directly.
    endpoint_id, _ = await _register(admin, versions="pages-wf@1")
    await admin.post(f"{_endpoints(admin)}/{endpoint_id}/disable")
    made = await admin.http.post(
        f"{API}/namespaces/{admin.namespace_id}/api-keys", json={"name": "k", "role": "admin"}, headers=ORIGIN
    )
    api = iam_aiki.key_http(made.json()["key"])
    started = await api.post(f"{API}/runs", json={"workflow": "pages-wf", "version": "1", "input": 1})
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    run_page = await admin.http.get(f"{UI}/ns/{admin.namespace_id}/runs/{run_id}")
    assert 'id="deliveries"' not in run_page.text
    async with iam_aiki.server.db.engine.begin() as conn:
        for attempt, outcome, status, latency, error in (
            (1, "http_error", 502, 41, "HTTP 502 from the endpoint"),
            (2, "completed", 200, 17, None),
        ):
            await conn.execute(
                sa.insert(endpoint_deliveries).values(
                    namespace_id=admin.namespace_id,
                    endpoint_id=endpoint_id,
                    run_id=run_id,
                    revision=1,
                    attempt=attempt,
                    outcome=outcome,
                    status_code=status,
                    latency_ms=latency,
                    error=error,
                    created_at=now_ms(),
                )
            )
    run_page = await admin.http.get(f"{UI}/ns/{admin.namespace_id}/runs/{run_id}")
    assert 'id="deliveries"' in run_page.text
    section = run_page.text.split('id="deliveries"', 1)[1]
    for text in ("http_error", "502", "41 ms", "HTTP 502 from the endpoint", "completed", "17 ms"):
        assert text in section, text
    assert f"{_endpoints(admin)}/{endpoint_id}" in section
    detail = await admin.http.get(f"{_endpoints(admin)}/{endpoint_id}")
    assert "HTTP 502 from the endpoint" in detail.text
    assert f"/runs/{run_id}" in detail.text
    assert "1 of 2 failed (50%)" in detail.text
