"""CSRF and origin checks of the dashboard (acceptance 3): an unsafe request without the session's
token, with another session's token, or from a foreign origin is refused and changes nothing; GET
requests change nothing; API keys do not drive the dashboard."""

from __future__ import annotations

from typing import Any

from tests.dashboard.support import ORIGIN, UI, Browser, signup
from tests.iam_support import API, IamHarness


async def _key_names(browser: Browser) -> list[str]:
    keys: list[dict[str, Any]] = (await browser.http.get(f"{API}/namespaces/{browser.namespace_id}/api-keys")).json()
    return [k["name"] for k in keys]


async def _create(browser: Browser, token: str | None, headers: dict[str, str], name: str) -> int:
    data = {"name": name, "role": "read"}
    if token is not None:
        data["_csrf"] = token
    resp = await browser.http.post(f"{UI}/ns/{browser.namespace_id}/keys", data=data, headers=headers)
    return resp.status_code


async def test_unsafe_requests_need_the_sessions_own_token_and_origin(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "alice@csrf.example")
    mallory = await signup(iam_aiki, "mallory@csrf.example")
    own = await alice.csrf()
    foreign = await mallory.csrf()
    assert own != foreign

    assert await _create(alice, None, ORIGIN, "no-token") == 403
    assert await _create(alice, "", ORIGIN, "empty-token") == 403
    assert await _create(alice, foreign, ORIGIN, "other-session-token") == 403
    assert await _create(alice, own, {"origin": "https://evil.example"}, "foreign-origin") == 403
    assert await _create(alice, own, {"referer": "https://evil.example/page"}, "foreign-referer") == 403
    assert await _create(alice, own, {}, "no-origin-no-referer") == 403
    assert await _key_names(alice) == []

    # The same request with the token in the HTMX header, or in the form, from our origin, works.
    assert await _create(alice, own, ORIGIN, "form-token") == 200
    header = {**ORIGIN, "x-csrf-token": own, "hx-request": "true"}
    assert await _create(alice, None, header, "header-token") == 200
    assert await _create(alice, None, {"referer": "http://aiki/ui/whatever", "x-csrf-token": own}, "referer") == 200
    assert sorted(await _key_names(alice)) == ["form-token", "header-token", "referer"]


async def test_a_new_session_gets_a_new_token_and_the_old_one_is_refused(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "rotate@csrf.example")
    before = await alice.csrf()
    logged = await alice.http.post(
        f"{UI}/login",
        data={"email": "rotate@csrf.example", "password": "correct horse battery staple"},
        headers=ORIGIN,
    )
    assert logged.status_code == 303
    after = await alice.csrf()
    assert after != before
    assert await _create(alice, before, ORIGIN, "stale") == 403
    assert await _create(alice, after, ORIGIN, "fresh") == 200


async def test_run_actions_and_logout_are_refused_without_the_token(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "actions@csrf.example")
    fake_run = "0190aaaa-0000-7000-8000-000000000000"
    resp = await alice.http.post(
        f"{UI}/ns/{alice.namespace_id}/runs/{fake_run}/cancel", data={"confirm": "yes"}, headers=ORIGIN
    )
    assert resp.status_code == 403
    resp = await alice.http.post(f"{UI}/logout", headers=ORIGIN)
    assert resp.status_code == 403
    # Still signed in: the forged logout did nothing.
    assert (await alice.http.get(f"{UI}/ns/{alice.namespace_id}/runs")).status_code == 200


async def test_get_requests_change_nothing(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "get@csrf.example")
    base = f"{UI}/ns/{alice.namespace_id}"
    for path in (f"{base}/keys?name=x&role=read", f"{UI}/logout", f"{base}/keys/x/revoke"):
        resp = await alice.http.get(path)
        assert resp.status_code in (200, 404, 405), (path, resp.status_code)
    assert await _key_names(alice) == []
    assert (await alice.http.get(f"{base}/runs")).status_code == 200  # GET /ui/logout did not log out


async def test_login_and_signup_forms_refuse_foreign_origins(iam_aiki: IamHarness) -> None:
    await signup(iam_aiki, "origin@csrf.example")
    anonymous = iam_aiki.new_http()
    resp = await anonymous.post(
        f"{UI}/login",
        data={"email": "origin@csrf.example", "password": "correct horse battery staple"},
        headers={"origin": "https://evil.example"},
    )
    assert resp.status_code == 403
    assert "aiki_session" not in resp.headers.get("set-cookie", "")
    resp = await anonymous.post(
        f"{UI}/signup",
        data={"email": "new@csrf.example", "password": "correct horse battery staple"},
        headers={"origin": "https://evil.example"},
    )
    assert resp.status_code == 403


async def test_api_keys_cannot_drive_the_dashboard(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "keys@csrf.example")
    token = await alice.csrf()
    made = await alice.http.post(
        f"{API}/namespaces/{alice.namespace_id}/api-keys", json={"name": "adm", "role": "admin"}, headers=ORIGIN
    )
    assert made.status_code == 201, made.text
    key_client = iam_aiki.key_http(made.json()["key"])
    resp = await key_client.post(
        f"{UI}/ns/{alice.namespace_id}/runs/0190aaaa-0000-7000-8000-000000000000/cancel",
        data={"confirm": "yes", "_csrf": token},
        headers=ORIGIN,
    )
    assert resp.status_code == 403
