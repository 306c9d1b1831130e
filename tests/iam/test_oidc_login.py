"""OIDC login through the app's routes, against a real OpenID provider process on loopback.

The browser is an httpx client on the Litestar app (cookies and all); the provider is
``oidc-provider-mock`` in its own process. Each test runs on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aiki.api.auth import SESSION_COOKIE
from aiki.api.oidc_routes import OIDC_BROWSER_COOKIE
from aiki.iam.config import IamConfig, IamConfigError
from aiki.iam.oidc import InMemoryPendingLoginStore, OidcConfig, OidcRelyingParty, TokenResponse, start_login
from aiki.iam.tables import audit_log, identities, oidc_logins, users
from aiki.platform.domain.errors import OidcError
from tests.api.test_http_basics import assert_problem
from tests.iam.oidc_provider import REDIRECT_URI, OidcProvider, RegisteredClient, run_provider
from tests.iam_support import API, PASSWORD, IamHarness, rows

LOGIN = f"{API}/auth/oidc/login"
CALLBACK = f"{API}/auth/oidc/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with run_provider() as running:
        yield running


@pytest.fixture(scope="module")
def client(provider: OidcProvider) -> RegisteredClient:
    return provider.register_client()


def _config(provider: OidcProvider, client: RegisteredClient) -> OidcConfig:
    return OidcConfig(
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri=REDIRECT_URI,
    )


@pytest.fixture
async def h(db_url: str, provider: OidcProvider, client: RegisteredClient) -> AsyncIterator[IamHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, oidc=_config(provider, client)).start()
    try:
        yield harness
    finally:
        await harness.close()


async def start(browser: httpx.AsyncClient, **params: str) -> str:
    """Begin a login in ``browser``; the provider URL it is redirected to."""
    resp = await browser.get(LOGIN, params=params)
    assert resp.status_code == 302, resp.text
    assert OIDC_BROWSER_COOKIE in resp.cookies
    location: str = resp.headers["location"]
    return location


async def sign_in(h: IamHarness, provider: OidcProvider, sub: str, browser: httpx.AsyncClient | None = None) -> Any:
    """A whole login as ``sub`` in ``browser`` (a new one by default); returns (browser, /auth/me body)."""
    browser = browser or h.new_http()
    callback = await provider.authorize(await start(browser), sub)
    resp = await browser.get(CALLBACK, params=callback)
    assert resp.status_code == 303, resp.text
    me = await browser.get(f"{API}/auth/me")
    assert me.status_code == 200, me.text
    return browser, me.json()


# -- the happy path -----------------------------------------------------------------------------


async def test_login_creates_the_user_keyed_by_issuer_and_subject_and_finds_it_again(
    h: IamHarness, provider: OidcProvider
) -> None:
    provider.set_user("sub-ada", {"email": "Ada@Example.com", "email_verified": True, "name": "Ada"})
    browser = h.new_http()
    url = await start(browser, return_to="/runs?status=failed")
    assert url.startswith(provider.issuer)
    callback = await provider.authorize(url, "sub-ada")
    resp = await browser.get(CALLBACK, params=callback)
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/runs?status=failed"
    assert SESSION_COOKIE in resp.cookies
    me = (await browser.get(f"{API}/auth/me")).json()
    assert me["user"]["email"] == "ada@example.com"
    assert me["user"]["name"] == "Ada"
    assert [o["role"] for o in me["organizations"]] == ["owner"]  # a home, as a sign-up gets

    (identity,) = await rows(h, sa.select(identities))
    assert (identity["issuer"], identity["subject"], identity["user_id"]) == (
        provider.issuer,
        "sub-ada",
        me["user"]["id"],
    )
    assert await rows(h, sa.select(oidc_logins)) == []  # the pending login was consumed

    # A second login (another browser, even with a changed email at the provider) is the same user.
    provider.set_user("sub-ada", {"email": "ada@new.example", "email_verified": True})
    _, again = await sign_in(h, provider, "sub-ada")
    assert again["user"]["id"] == me["user"]["id"]
    assert len(await rows(h, sa.select(identities))) == 1
    assert len(await rows(h, sa.select(users))) == 1

    logins = await rows(h, sa.select(audit_log).where(audit_log.c.action == "oidc.login"))
    assert [r["outcome"] for r in logins] == ["ok", "ok"]
    assert all(r["actor_id"] == me["user"]["id"] for r in logins)


async def test_two_first_logins_of_one_person_at_once_make_one_user(h: IamHarness, provider: OidcProvider) -> None:
    # Two tabs finishing their first login together: on PostgreSQL the transactions really race,
    # and the loser of the unique constraint signs in as the winner's user.
    provider.set_user("sub-twin", {"email": "twin@example.com", "email_verified": True})
    browsers = [h.new_http(), h.new_http()]
    callbacks = [await provider.authorize(await start(b), "sub-twin") for b in browsers]
    answers = await asyncio.gather(*(b.get(CALLBACK, params=c) for b, c in zip(browsers, callbacks, strict=True)))
    assert [a.status_code for a in answers] == [303, 303], [a.text for a in answers]
    ids = {(await b.get(f"{API}/auth/me")).json()["user"]["id"] for b in browsers}
    assert len(ids) == 1
    assert len(await rows(h, sa.select(users))) == 1
    assert len(await rows(h, sa.select(identities))) == 1


# -- refusals at the callback ----------------------------------------------------------------------


async def test_a_forged_state_is_refused_and_the_real_login_still_completes(
    h: IamHarness, provider: OidcProvider
) -> None:
    browser = h.new_http()
    callback = await provider.authorize(await start(browser), "sub-forged")
    resp = await browser.get(CALLBACK, params={**callback, "state": "forged-by-an-attacker"})
    assert_problem(resp, 400, "oidc_state_mismatch")
    assert SESSION_COOKIE not in resp.cookies
    assert (await browser.get(f"{API}/auth/me")).status_code == 401
    # A state far too long to be ours is refused the same way, not a server error.
    assert_problem(await browser.get(CALLBACK, params={**callback, "state": "x" * 5000}), 400, "oidc_state_mismatch")

    assert (await browser.get(CALLBACK, params=callback)).status_code == 303
    failed = await rows(
        h, sa.select(audit_log).where(audit_log.c.action == "oidc.login", audit_log.c.outcome == "failed")
    )
    assert len(failed) == 2
    assert all('"oidc_state_mismatch"' in (r["detail"] or "") for r in failed)


async def test_a_callback_replayed_in_another_browser_session_is_refused(h: IamHarness, provider: OidcProvider) -> None:
    alice_browser, mallory_browser, bare = h.new_http(), h.new_http(), h.new_http()
    callback = await provider.authorize(await start(alice_browser), "sub-alice")
    await start(mallory_browser)  # a login of her own in progress: a pre-login cookie, another state

    assert_problem(await mallory_browser.get(CALLBACK, params=callback), 400, "oidc_state_mismatch")
    assert_problem(await bare.get(CALLBACK, params=callback), 400, "oidc_state_mismatch")  # no pre-login cookie
    assert (await mallory_browser.get(f"{API}/auth/me")).status_code == 401

    assert (await alice_browser.get(CALLBACK, params=callback)).status_code == 303
    # Used once: replayed afterwards, in the same browser or any other, it is refused.
    assert_problem(await alice_browser.get(CALLBACK, params=callback), 400, "oidc_state_mismatch")
    assert_problem(await mallory_browser.get(CALLBACK, params=callback), 400, "oidc_state_mismatch")


async def _foreign_id_token(provider: OidcProvider, config: OidcConfig, sub: str) -> str:
    """A genuine ID token from the provider, but from a login this app never started."""
    async with OidcRelyingParty(config) as rp:
        store = InMemoryPendingLoginStore()
        url = await start_login(rp, store)
        callback = await provider.authorize(url, sub)
        pending = await store.take(callback["state"])
        assert pending is not None
        tokens = await rp.exchange_code(pending, callback["code"])
    assert tokens.id_token is not None
    return tokens.id_token


@pytest.mark.parametrize(
    "case",
    ["another client's token", "another login's token", "another issuer's token", "callback from another issuer"],
)
async def test_a_token_that_does_not_answer_this_login_is_refused(
    h: IamHarness, provider: OidcProvider, client: RegisteredClient, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    provider.set_user("sub-eve", {"email": "eve@example.com", "email_verified": True})
    browser = h.new_http()
    callback = await provider.authorize(await start(browser), "sub-eve")
    if case == "callback from another issuer":
        callback = {**callback, "iss": "https://attacker.example"}
        expected = "oidc_wrong_issuer"
    else:
        if case == "another client's token":
            other = provider.register_client()
            config = OidcConfig(
                issuer=provider.issuer,
                client_id=other.client_id,
                client_secret=other.client_secret,
                redirect_uri=REDIRECT_URI,
            )
            expected = "oidc_wrong_audience"
        elif case == "another issuer's token":
            # Reached as "localhost", the provider signs with that issuer (and the same keys).
            config = OidcConfig(
                issuer=provider.localhost_issuer,
                client_id=client.client_id,
                client_secret=client.client_secret,
                redirect_uri=REDIRECT_URI,
            )
            expected = "oidc_wrong_issuer"
        else:
            config = _config(provider, client)  # our client, but the nonce of another login
            expected = "oidc_nonce_mismatch"
        substitute = await _foreign_id_token(provider, config, "sub-eve")
        rp = h.iam.oidc
        assert rp is not None

        async def exchange(*_: Any) -> TokenResponse:  # a token endpoint that hands back the wrong token
            return TokenResponse(id_token=substitute)

        monkeypatch.setattr(rp, "exchange_code", exchange)
    assert_problem(await browser.get(CALLBACK, params=callback), 401, expected)
    assert (await browser.get(f"{API}/auth/me")).status_code == 401
    assert await rows(h, sa.select(identities)) == []


async def test_a_login_the_user_denies_at_the_provider_is_refused(h: IamHarness, provider: OidcProvider) -> None:
    browser = h.new_http()
    callback = await provider.deny(await start(browser))
    resp = await browser.get(CALLBACK, params=callback)
    assert_problem(resp, 401, "oidc_provider_error")
    assert "access_denied" in resp.json()["detail"]


async def test_return_to_must_be_a_path_on_this_server(h: IamHarness) -> None:
    browser = h.new_http()
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "runs", "/a b"):
        resp = await browser.get(LOGIN, params={"return_to": target})
        assert_problem(resp, 422, "validation_error")
        assert resp.json()["field"] == "return_to"


async def test_login_starts_are_rate_limited_per_address(
    db_url: str, provider: OidcProvider, client: RegisteredClient
) -> None:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, oidc=_config(provider, client), login_max_per_ip=3).start()
    try:
        browser = harness.new_http()
        for _ in range(3):
            await start(browser)
        limited = await browser.get(LOGIN)
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) > 0
        harness.advance(harness.iam.config.login_window_s * 1000 + 1)
        await start(browser)
    finally:
        await harness.close()


async def test_only_allowed_email_domains_sign_in(
    db_url: str, provider: OidcProvider, client: RegisteredClient
) -> None:
    provider.set_user("sub-out", {"email": "out@elsewhere.test", "email_verified": True})
    provider.set_user("sub-unverified", {"email": "un@example.com", "email_verified": False})
    provider.set_user("sub-in", {"email": "in@example.com", "email_verified": True})
    config = OidcConfig(
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri=REDIRECT_URI,
        allowed_email_domains=("example.com",),
    )
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, oidc=config).start()
    try:
        for sub, code in (("sub-out", "oidc_email_domain_not_allowed"), ("sub-unverified", "oidc_email_unverified")):
            browser = harness.new_http()
            callback = await provider.authorize(await start(browser), sub)
            assert_problem(await browser.get(CALLBACK, params=callback), 403, code)
        _, me = await sign_in(harness, provider, "sub-in")
        assert me["user"]["email"] == "in@example.com"
        assert len(await rows(harness, sa.select(users))) == 1
    finally:
        await harness.close()


# -- linking, and what a login leaves valid ---------------------------------------------------------


async def test_an_unverified_email_never_links_to_an_existing_password_user(
    h: IamHarness, provider: OidcProvider
) -> None:
    owner = await h.signup("pat@example.com")
    provider.set_user("sub-impostor", {"email": "pat@example.com", "email_verified": False})
    browser, me = await sign_in(h, provider, "sub-impostor")
    assert me["user"]["id"] != owner.user_id
    assert me["user"]["email"] is None  # an unverified address is not given to the new user either
    (identity,) = await rows(h, sa.select(identities))
    assert identity["user_id"] == me["user"]["id"]
    # The impostor sees nothing of Pat's organization.
    assert owner.org_id not in [o["id"] for o in me["organizations"]]
    assert (await browser.get(f"{API}/organizations/{owner.org_id}")).status_code == 404
    # Pat still logs in with the password, and has no identity attached.
    await h.login("pat@example.com")


async def test_a_verified_email_links_to_the_existing_user(h: IamHarness, provider: OidcProvider) -> None:
    owner = await h.signup("quinn@example.com")
    provider.set_user("sub-quinn", {"email": "QUINN@example.com", "email_verified": True})
    _, me = await sign_in(h, provider, "sub-quinn")
    assert me["user"]["id"] == owner.user_id
    assert [o["id"] for o in me["organizations"]] == [owner.org_id]
    links = await rows(h, sa.select(audit_log).where(audit_log.c.action == "identity.link"))
    assert [(r["actor_id"], r["organization_id"]) for r in links] == [(owner.user_id, owner.org_id)]
    # The owner's organization audit shows the OIDC login.
    audit = (await owner.http.get(f"{API}/organizations/{owner.org_id}/audit")).json()["items"]
    assert "oidc.login" in [e["action"] for e in audit]


async def test_a_verified_provider_email_never_signs_in_to_an_unverified_password_account(
    h: IamHarness, provider: OidcProvider
) -> None:
    """Pre-account takeover (issue 11, High): a squatter signs up with the victim's address first;
    the victim's SSO login must not land in (nor adopt) the squatter's account."""
    squatter = h.new_http()
    resp = await squatter.post(f"{API}/auth/signup", json={"email": "victim@example.com", "password": PASSWORD})
    assert resp.status_code == 202, resp.text
    (account,) = await rows(h, sa.select(users).where(users.c.email == "victim@example.com"))
    assert account["email_verified_at"] is None
    provider.set_user("sub-victim", {"email": "victim@example.com", "email_verified": True})
    browser = h.new_http()
    callback = await provider.authorize(await start(browser), "sub-victim")
    refused = await browser.get(CALLBACK, params=callback)
    assert_problem(refused, 403, "oidc_account_unverified")
    assert "set-cookie" not in refused.headers or "aiki_session=" not in refused.headers["set-cookie"]
    assert (await browser.get(f"{API}/auth/me")).status_code == 401
    # Nothing was created or linked: no identity, still one (unverified) account with that address.
    assert await rows(h, sa.select(identities)) == []
    assert [r["id"] for r in await rows(h, sa.select(users).where(users.c.email == "victim@example.com"))] == [
        account["id"]
    ]
    # Once the mailbox owner verifies (here: by the link), the same SSO login links as before.
    token = h.last_token("victim@example.com", "/ui/verify-email")
    assert (await h.new_http().post(f"{API}/auth/verify-email", json={"token": token})).status_code == 200
    _, me = await sign_in(h, provider, "sub-victim")
    assert me["user"]["id"] == account["id"]
    assert me["user"]["email_verified"] is True


async def test_the_pre_login_session_is_not_valid_after_login(h: IamHarness, provider: OidcProvider) -> None:
    await h.signup("rosa@example.com")
    browser = await h.login("rosa@example.com")  # a session from before, in this browser
    old_session = browser.cookies[SESSION_COOKIE]
    callback = await provider.authorize(await start(browser), "sub-rosa")
    pre_login = browser.cookies[OIDC_BROWSER_COOKIE]
    resp = await browser.get(CALLBACK, params=callback)
    assert resp.status_code == 303, resp.text
    new_session = resp.cookies[SESSION_COOKIE]
    assert new_session not in (old_session, pre_login)
    assert resp.cookies.get(OIDC_BROWSER_COOKIE, "") == ""  # cleared

    for stale in (old_session, pre_login):
        other = h.new_http()
        other.cookies.set(SESSION_COOKIE, stale)
        assert (await other.get(f"{API}/auth/me")).status_code == 401
    fresh = h.new_http()
    fresh.cookies.set(SESSION_COOKIE, new_session)
    assert (await fresh.get(f"{API}/auth/me")).status_code == 200
    # The pre-login cookie cannot finish another login either: its login was consumed.
    replay = h.new_http()
    replay.cookies.set(OIDC_BROWSER_COOKIE, pre_login, path=f"{API}/auth/oidc")
    assert_problem(await replay.get(CALLBACK, params=callback), 400, "oidc_state_mismatch")


async def test_no_oidc_secret_in_any_table_or_log(
    h: IamHarness, provider: OidcProvider, client: RegisteredClient, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.iam.test_security import _dump_every_table

    caplog.set_level(logging.DEBUG)
    provider.set_user("sub-sam", {"email": "sam@example.com", "email_verified": True})
    browser = h.new_http()
    url = await start(browser)
    in_progress = await _dump_every_table(h)
    pre_login = browser.cookies[OIDC_BROWSER_COOKIE]
    assert pre_login not in in_progress  # kept as an HMAC only
    callback = await provider.authorize(url, "sub-sam")
    resp = await browser.get(CALLBACK, params=callback)
    assert resp.status_code == 303, resp.text
    dump = await _dump_every_table(h)
    assert "sub-sam" in dump  # the dump did read the identities table
    every_log = "\n".join(str(r.__dict__) for r in caplog.records)
    # The test's own browser (httpx) logs the URLs it visits, code included; the server must not.
    server_logs = "\n".join(str(r.__dict__) for r in caplog.records if r.name.startswith("aiki"))
    assert client.client_secret not in every_log
    for secret in (client.client_secret, callback["code"], pre_login, resp.cookies[SESSION_COOKIE]):
        assert secret not in dump, "a secret is stored in clear"
        assert secret not in server_logs, "a secret reached the logs"
    assert client.client_secret not in repr(h.iam.config)


# -- configuration ---------------------------------------------------------------------------------


async def test_without_oidc_configured_the_routes_say_so(iam_aiki: IamHarness) -> None:
    resp = await iam_aiki.new_http().get(LOGIN)
    assert_problem(resp, 404, "oidc_not_configured")
    assert "AIKI_OIDC_ISSUER" in resp.json()["detail"]


async def test_an_unreachable_provider_is_a_bad_gateway(db_url: str, client: RegisteredClient) -> None:
    from tests.iam.oidc_provider import free_port

    config = OidcConfig(
        issuer=f"http://127.0.0.1:{free_port()}",
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri=REDIRECT_URI,
    )
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, oidc=config).start()
    try:
        assert_problem(await harness.new_http().get(LOGIN), 502, "oidc_discovery_failed")
    finally:
        await harness.close()


def test_oidc_settings_come_from_the_environment() -> None:
    env = {
        "AIKI_SECRET_KEY": "s3cret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "AIKI_BASE_URL": "https://aiki.example.com/",
        "AIKI_OIDC_ISSUER": "https://login.example.com",
        "AIKI_OIDC_CLIENT_ID": "aiki",
        "AIKI_OIDC_CLIENT_SECRET": "shh",
        "AIKI_OIDC_ALLOWED_EMAIL_DOMAINS": "example.com, Example.org",
    }
    config = IamConfig.from_env(env)
    assert config.oidc is not None
    assert config.oidc.redirect_uri == "https://aiki.example.com/api/v1/auth/oidc/callback"
    assert config.oidc.allowed_email_domains == ("example.com", "example.org")
    assert IamConfig.from_env({k: v for k, v in env.items() if "OIDC" not in k}).oidc is None
    with pytest.raises(OidcError) as caught:
        IamConfig.from_env({k: v for k, v in env.items() if k != "AIKI_OIDC_CLIENT_SECRET"})
    assert caught.value.field == "AIKI_OIDC_CLIENT_SECRET"
    with pytest.raises(IamConfigError):
        IamConfig.from_env({"AIKI_OIDC_ISSUER": "https://login.example.com"})
