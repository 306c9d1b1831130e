"""Rotating the server secret (``AIKI_SECRET_KEY_PREVIOUS``), on both databases.

Every replica restarts with the new secret and the old one as previous: API keys, session cookies
and invitation links made under the old secret keep working, everything new is made under the
new one, and an API key used once during the rotation is stored again under the new secret, so
it survives dropping the previous one. Without the previous secret, what only it verifies stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aiki.api.auth import SESSION_COOKIE
from aiki.iam.crypto import Secrets
from aiki.iam.tables import metadata
from tests.iam_support import API, BASE_URL, PASSWORD, IamHarness

OLD = "old-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
NEW = "new-secret-9876543210-ZYXWVUTSRQPONMLKJIHGFEDCBA"

Start = Callable[..., Awaitable[IamHarness]]


@pytest.fixture
async def start(db_url: str) -> AsyncIterator[Start]:
    """Start a server (a "replica") on the test's database with the given IAM settings."""
    started: list[IamHarness] = []

    async def make(**config: Any) -> IamHarness:
        harness = IamHarness("postgres" if db_url.startswith("postgresql") else "sqlite", db_url, **config)
        started.append(harness)
        return await harness.start()

    try:
        yield make
    finally:
        for harness in reversed(started):
            await harness.close()


def _with_cookie(harness: IamHarness, cookie: str) -> httpx.AsyncClient:
    return harness.new_http({"cookie": f"{SESSION_COOKIE}={cookie}", "origin": BASE_URL})


async def _stored_key_hash(harness: IamHarness, key_id: str) -> str:
    keys = metadata.tables["api_keys"]
    async with harness.iam.db.engine.connect() as conn:
        stored = await conn.scalar(sa.select(keys.c.key_hash).where(keys.c.id == key_id))
    assert isinstance(stored, str)
    return stored


async def test_keys_sessions_and_invitations_survive_a_rotation(start: Start) -> None:
    before = await start(secret_key=OLD)
    owner = await before.signup("owner@example.com")
    used_key = (await before.create_key(owner, "read"))["key"]
    unused_key = (await before.create_key(owner, "read"))["key"]
    cookie = owner.http.cookies[SESSION_COOKIE]
    invitations = f"{API}/organizations/{owner.org_id}/invitations"
    invited = await owner.http.post(invitations, json={"email": "new@example.com"})
    assert invited.status_code == 201, invited.text
    invitation_token = invited.json()["token"]
    await before.close()

    rotating = await start(secret_key=NEW, previous_secret_key=OLD)
    # What the old secret made still works...
    assert (await rotating.key_http(used_key).get(f"{API}/runs")).status_code == 200
    assert (await rotating.key_http(used_key).get(f"{API}/runs")).status_code == 200  # and again, cached
    me = await _with_cookie(rotating, cookie).get(f"{API}/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["email"] == "owner@example.com"
    newcomer = await rotating.signup("new@example.com")
    accepted = await newcomer.http.post(f"{API}/invitations/accept", json={"token": invitation_token})
    assert accepted.status_code == 200, accepted.text
    # ...and everything new is made under the new secret only.
    fresh_cookie = (await rotating.login("owner@example.com", PASSWORD)).cookies[SESSION_COOKIE]
    assert Secrets(NEW).session_id(fresh_cookie) is not None
    assert Secrets(OLD).session_id(fresh_cookie) is None
    fresh_key = (await rotating.create_key(owner_on(rotating, owner, fresh_cookie), "read"))["key"]
    fresh_id = fresh_key.split("_")[1]
    assert await _stored_key_hash(rotating, fresh_id) == Secrets(NEW).api_key_hash(fresh_key)
    # The key used during the rotation is now stored under the new secret.
    assert await _stored_key_hash(rotating, used_key.split("_")[1]) == Secrets(NEW).api_key_hash(used_key)
    assert await _stored_key_hash(rotating, unused_key.split("_")[1]) == Secrets(OLD).api_key_hash(unused_key)
    await rotating.close()

    after = await start(secret_key=NEW)
    assert (await after.key_http(used_key).get(f"{API}/runs")).status_code == 200
    assert (await after.key_http(fresh_key).get(f"{API}/runs")).status_code == 200
    assert (await _with_cookie(after, fresh_cookie).get(f"{API}/auth/me")).status_code == 200
    # What only the dropped secret verifies no longer does.
    assert (await after.key_http(unused_key).get(f"{API}/runs")).status_code == 401
    assert (await _with_cookie(after, cookie).get(f"{API}/auth/me")).status_code == 401


def owner_on(harness: IamHarness, owner: Any, cookie: str) -> Any:
    """``owner`` signed in on ``harness`` with ``cookie``."""
    owner.http = _with_cookie(harness, cookie)
    return owner


async def test_without_the_previous_secret_a_rotation_invalidates_everything(start: Start) -> None:
    before = await start(secret_key=OLD)
    owner = await before.signup("owner@example.com")
    key = (await before.create_key(owner, "read"))["key"]
    cookie = owner.http.cookies[SESSION_COOKIE]
    await before.close()

    after = await start(secret_key=NEW)
    assert (await after.key_http(key).get(f"{API}/runs")).status_code == 401
    assert (await _with_cookie(after, cookie).get(f"{API}/auth/me")).status_code == 401


async def test_a_cached_key_is_restored_under_the_new_secret(start: Start) -> None:
    """A replica that cached a key's old hash before the restart of another: still verified, and re-stored."""
    rotating = await start(secret_key=NEW, previous_secret_key=OLD, api_key_cache_ttl_s=3600)
    owner = await rotating.signup("owner@example.com")
    key = (await rotating.create_key(owner, "read"))["key"]
    key_id = key.split("_")[1]
    old_hash = Secrets(OLD).api_key_hash(key)
    keys = metadata.tables["api_keys"]
    async with rotating.iam.db.transaction() as conn:  # as if made before the rotation
        await conn.execute(keys.update().where(keys.c.id == key_id).values(key_hash=old_hash))
    cached = rotating.iam.key_cache.get(key_id, rotating.iam.now())
    assert cached is None or cached.key_hash != old_hash
    assert (await rotating.key_http(key).get(f"{API}/runs")).status_code == 200
    cached = rotating.iam.key_cache.get(key_id, rotating.iam.now())
    if cached is not None:
        cached.key_hash = old_hash
    assert (await rotating.key_http(key).get(f"{API}/runs")).status_code == 200
    assert await _stored_key_hash(rotating, key_id) == Secrets(NEW).api_key_hash(key)


async def test_a_dashboard_form_rendered_before_the_rotation_still_posts(start: Start) -> None:
    from tests.dashboard.support import ORIGIN, UI, signup

    before = await start(secret_key=OLD)
    browser = await signup(before, "owner@example.com")
    token = await browser.csrf()
    cookie = browser.http.cookies[SESSION_COOKIE]
    await before.close()

    rotating = await start(secret_key=NEW, previous_secret_key=OLD)
    http = _with_cookie(rotating, cookie)
    created = await http.post(
        f"{UI}/ns/{browser.namespace_id}/keys",
        data={"name": "after rotation", "role": "read", "_csrf": token},
        headers=ORIGIN,
    )
    assert created.status_code == 200, created.text
    assert "after rotation" in created.text


async def test_an_sso_login_begun_before_the_rotation_completes_after_it(start: Start) -> None:
    """The provider's callback finds the login its browser began under the previous secret."""
    from aiki.iam.oidc import PendingLogin
    from aiki.iam.oidc_login import DbPendingLoginStore, _store_of_browser

    browser_token = "pre-login-cookie-of-one-browser"
    before = await start(secret_key=OLD)
    pending = PendingLogin(
        state="state-1",
        nonce="nonce-1",
        code_verifier="verifier-1",
        created_at=before.iam.now(),
        issuer="https://id.example",
        client_id="aiki",
        redirect_uri="http://aiki/api/v1/auth/oidc/callback",
    )
    await DbPendingLoginStore(before.iam, before.iam.secrets.oidc_browser_hash(browser_token), 600_000).put(pending)
    await before.close()

    rotating = await start(secret_key=NEW, previous_secret_key=OLD)
    assert await _store_of_browser(rotating.iam, "another-browser", 600_000).take("state-1") is None
    taken = await _store_of_browser(rotating.iam, browser_token, 600_000).take("state-1")
    assert taken == pending
    assert await _store_of_browser(rotating.iam, browser_token, 600_000).take("state-1") is None  # used once
