"""Acceptance 2 of the dashboard: OIDC login via the mock provider, in Chromium.

A real ``oidc-provider-mock`` process and a real ``aiki server`` process (PostgreSQL, configured
through ``AIKI_OIDC_*`` as an operator would) on loopback. The person clicks "Log in with SSO",
signs in on the provider's own page and lands on the dashboard signed in; after logging out, the
same subject signing in again is the same user with the same namespace.

The provider's form has only the subject; the claims it asserts for that subject (email,
email_verified) are declared beforehand through its API, as a real provider holds them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aiki.iam.config import OIDC_CALLBACK_PATH
from tests.dashboard.browser import Procs, free_port, screenshot_dir, start_server
from tests.iam.oidc_provider import OidcProvider, run_provider

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]

RUNS_PAGE = re.compile(r"/ui/ns/([^/]+)/runs$")


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with run_provider() as running:
        yield running


def _offline_provider_styles(page: Any) -> None:
    # The provider's page links a stylesheet on a CDN; the test runs offline, so answer it empty
    # rather than let a failed fetch show up as a browser error.
    page.route("https://cdn.jsdelivr.net/**", lambda route: route.fulfill(status=200, content_type="text/css", body=""))


def _sso_login(page: Any, base: str, provider: OidcProvider, sub: str, shot: str) -> str:
    """Log in with SSO as ``sub`` from the login page; the id of the namespace the dashboard opens."""
    from playwright.sync_api import expect

    page.goto(f"{base}/ui/login")
    page.get_by_role("link", name="Log in with SSO").click()
    page.wait_for_url(f"{provider.issuer}/oauth2/authorize?**")
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    page.locator('input[name="sub"]').fill(sub)
    page.screenshot(path=str(screenshot_dir() / shot), full_page=True)
    with page.expect_response(lambda r: OIDC_CALLBACK_PATH in r.url) as callback:
        page.get_by_role("button", name="Authorize", exact=True).click()
    # The login page's link asked to come back to the dashboard, and the callback does.
    assert callback.value.status == 303
    assert callback.value.headers["location"] == "/ui/"
    page.wait_for_url(RUNS_PAGE)
    assert page.url.startswith(base)
    match = RUNS_PAGE.search(page.url)
    assert match is not None
    return match.group(1)


def _me(page: Any, base: str) -> tuple[int, Any]:
    """``/api/v1/auth/me`` with the browser's own cookies (fetched from a dashboard page, signed in)."""
    answer = page.evaluate(
        "async (url) => { const r = await fetch(url); return [r.status, r.ok ? await r.json() : null]; }",
        f"{base}/api/v1/auth/me",
    )
    return int(answer[0]), answer[1]


def test_oidc_login_through_the_mock_provider_lands_on_the_dashboard_as_the_same_user(
    pg_url: str, procs: Procs, provider: OidcProvider, page: Any
) -> None:
    # Torn down in reverse: the page (which polls the server) closes first, the server stops before
    # its database is dropped.
    from playwright.sync_api import expect

    port = free_port()
    base = f"http://localhost:{port}"
    client = provider.register_client(f"{base}{OIDC_CALLBACK_PATH}")
    start_server(
        procs,
        pg_url,
        port=port,
        env={
            "AIKI_OIDC_ISSUER": provider.issuer,
            "AIKI_OIDC_CLIENT_ID": client.client_id,
            "AIKI_OIDC_CLIENT_SECRET": client.client_secret,
        },
    )
    sub = f"sso-{uuid.uuid4().hex[:8]}"
    email = f"{sub}@sso.example"
    provider.set_user(sub, {"email": email, "email_verified": True, "name": "Sso Person"})
    _offline_provider_styles(page)

    # First login: a new user with a home organization and namespace, shown their runs page.
    first_ns = _sso_login(page, base, provider, sub, "20-oidc-provider-page.png")
    expect(page.locator("#user-menu summary")).to_have_text(email)
    expect(page.locator("#ns-switcher summary strong")).not_to_have_text("choose")
    namespace_name = page.locator("#ns-switcher summary strong").inner_text()
    page.screenshot(path=str(screenshot_dir() / "21-oidc-landing-runs.png"), full_page=True)
    status, me = _me(page, base)
    assert status == 200
    assert me["user"]["email"] == email
    assert [o["role"] for o in me["organizations"]] == ["owner"]
    user_id = me["user"]["id"]

    # Log out: the session is gone, the dashboard asks for a login again.
    page.locator("#user-menu summary").click()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{base}/ui/login")
    page.goto(f"{base}/ui/")
    page.wait_for_url(f"{base}/ui/login")

    # The same subject again: the same user, the same namespace, not a second sign-up.
    again_ns = _sso_login(page, base, provider, sub, "22-oidc-provider-page-again.png")
    assert again_ns == first_ns
    expect(page.locator("#user-menu summary")).to_have_text(email)
    expect(page.locator("#ns-switcher summary strong")).to_have_text(namespace_name)
    status, me_again = _me(page, base)
    assert status == 200
    assert me_again["user"]["id"] == user_id
    assert [o["id"] for o in me_again["organizations"]] == [o["id"] for o in me["organizations"]]
