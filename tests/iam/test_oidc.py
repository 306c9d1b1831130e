"""OIDC login against a real OpenID provider process (oidc-provider-mock on loopback)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from aiki.iam._authlib import s256_code_challenge
from aiki.iam.oidc import (
    CLOCK_LEEWAY_S,
    PENDING_LOGIN_TTL_MS,
    InMemoryPendingLoginStore,
    OidcConfig,
    OidcError,
    OidcRelyingParty,
    PendingLogin,
    finish_login,
    start_login,
)
from tests.iam.oidc_provider import REDIRECT_URI, OidcProvider, RegisteredClient, free_port, run_provider

MakeRp = Callable[..., OidcRelyingParty]


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with run_provider() as running:
        yield running


@pytest.fixture(scope="module")
def client(provider: OidcProvider) -> RegisteredClient:
    return provider.register_client()


@pytest.fixture
async def make_rp(provider: OidcProvider, client: RegisteredClient) -> AsyncIterator[MakeRp]:
    """Build relying parties for the provider (our client unless told otherwise); closed afterwards."""
    made: list[OidcRelyingParty] = []

    def make(**overrides: Any) -> OidcRelyingParty:
        settings: dict[str, Any] = {
            "issuer": provider.issuer,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uri": REDIRECT_URI,
        }
        settings.update(overrides)
        rp = OidcRelyingParty(OidcConfig(**settings))
        made.append(rp)
        return rp

    yield make
    for rp in made:
        await rp.aclose()


async def expect_refusal(code: str, awaitable: Any) -> OidcError:
    with pytest.raises(OidcError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value.message
    return caught.value


# -- the happy path ------------------------------------------------------------------------------


async def test_login_completes_with_the_subject_chosen_at_the_provider(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("alice-0001", {"email": "alice@example.com", "email_verified": True, "name": "Alice Liddell"})
    rp = make_rp()
    store = InMemoryPendingLoginStore()

    url = await start_login(rp, store, return_to="/runs")
    query = parse_qs(urlsplit(url).query)
    assert len(store) == 1
    callback = await provider.authorize(url, "alice-0001")
    identity, pending = await finish_login(rp, store, callback)

    assert (identity.issuer, identity.subject) == (provider.issuer, "alice-0001")
    assert identity.email == "alice@example.com"
    assert identity.email_verified is True
    assert identity.name == "Alice Liddell"
    assert identity.may_link_by_email is True
    assert pending.return_to == "/runs"
    assert len(store) == 0  # used up
    # What went to the provider: code flow, PKCE S256 over the secret verifier, state and nonce.
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [s256_code_challenge(pending.code_verifier)]
    assert query["state"] == [pending.state]
    assert query["nonce"] == [pending.nonce]
    assert query["scope"] == ["openid email profile"]
    assert pending.code_verifier not in url


async def test_each_login_gets_fresh_random_state_nonce_and_verifier(make_rp: MakeRp) -> None:
    rp = make_rp()
    pendings = [(await rp.begin_login())[1] for _ in range(3)]
    values = [v for p in pendings for v in (p.state, p.nonce, p.code_verifier)]
    assert len(set(values)) == len(values)
    assert all(len(p.state) >= 43 and 43 <= len(p.code_verifier) <= 128 for p in pendings)


async def test_pending_login_survives_a_json_round_trip_through_storage(
    provider: OidcProvider, make_rp: MakeRp
) -> None:
    provider.set_user("stored-user", {"email": "stored@example.com", "email_verified": True})
    rp = make_rp()
    url, pending = await rp.begin_login(return_to="/x")
    column = pending.to_json()
    assert json.loads(column)["state"] == pending.state
    restored = PendingLogin.from_json(column)
    assert restored == pending

    identity = await rp.complete_login(restored, await provider.authorize(url, "stored-user"))
    assert identity.subject == "stored-user"


# -- forged and replayed callbacks ----------------------------------------------------------------


async def test_forged_state_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("bob", {"email": "bob@example.com", "email_verified": True})
    rp = make_rp()
    store = InMemoryPendingLoginStore()
    url = await start_login(rp, store)
    callback = await provider.authorize(url, "bob")
    forged = {**callback, "state": "forged-by-an-attacker"}

    await expect_refusal("oidc_state_mismatch", finish_login(rp, store, forged))
    (pending,) = [await store.take(callback["state"])]
    assert pending is not None
    await expect_refusal("oidc_state_mismatch", rp.complete_login(pending, forged))
    await expect_refusal("oidc_state_mismatch", rp.complete_login(pending, {"code": callback["code"]}))


async def test_a_callback_replayed_in_another_session_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("carol", {"email": "carol@example.com", "email_verified": True})
    rp = make_rp()
    session_a, session_b = InMemoryPendingLoginStore(), InMemoryPendingLoginStore()
    url_a = await start_login(rp, session_a)
    url_b = await start_login(rp, session_b)  # session B has a login of its own in progress
    callback_a = await provider.authorize(url_a, "carol")

    # Another browser session presenting A's callback finds no login with that state.
    await expect_refusal("oidc_state_mismatch", finish_login(rp, session_b, callback_a))
    identity, _ = await finish_login(rp, session_a, callback_a)
    assert identity.subject == "carol"
    # Replayed after use, in either session.
    await expect_refusal("oidc_state_mismatch", finish_login(rp, session_a, callback_a))
    await expect_refusal("oidc_state_mismatch", finish_login(rp, session_b, callback_a))
    # B's own login was not disturbed.
    identity_b, _ = await finish_login(rp, session_b, await provider.authorize(url_b, "carol"))
    assert identity_b.subject == "carol"


async def test_a_pending_login_older_than_its_ttl_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("slow", {"email": "slow@example.com", "email_verified": True})
    rp = make_rp()
    url, pending = await rp.begin_login()
    callback = await provider.authorize(url, "slow")
    late = pending.created_at + PENDING_LOGIN_TTL_MS + 1
    await expect_refusal("oidc_expired_login", rp.complete_login(pending, callback, now_ms=late))


# -- the provider's answers -------------------------------------------------------------------------


async def test_an_error_from_the_provider_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    rp = make_rp()
    url, pending = await rp.begin_login()
    callback = await provider.deny(url)
    assert "state" not in callback  # this provider drops the state from error redirects
    error = await expect_refusal("oidc_provider_error", rp.complete_login(pending, callback))
    assert "access_denied" in error.message
    await expect_refusal("oidc_provider_error", rp.complete_login(pending, {**callback, "state": pending.state}))
    # An error callback with someone else's state is still a state mismatch.
    await expect_refusal("oidc_state_mismatch", rp.complete_login(pending, {**callback, "state": "forged"}))
    # Through a session store: reported, and this session's pending login is left alone.
    store = InMemoryPendingLoginStore()
    await start_login(rp, store)
    await expect_refusal("oidc_provider_error", finish_login(rp, store, callback))
    assert len(store) == 1


async def test_a_code_the_token_endpoint_refuses_is_reported(provider: OidcProvider, make_rp: MakeRp) -> None:
    rp = make_rp()
    url, pending = await rp.begin_login()
    callback = await provider.authorize(url, "someone@example.com")
    bogus = {**callback, "code": "not-a-code-the-provider-issued"}
    error = await expect_refusal("oidc_token_exchange_failed", rp.complete_login(pending, bogus))
    assert "invalid_grant" in error.message
    # A wrong client secret is refused by the provider too (the secret really is checked).
    wrong_secret = make_rp(client_secret="not-the-secret")
    await expect_refusal("oidc_token_exchange_failed", wrong_secret.complete_login(pending, callback))


async def test_a_code_issued_to_another_client_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("dave", {"email": "dave@example.com", "email_verified": True})
    other = provider.register_client()
    other_rp = make_rp(client_id=other.client_id, client_secret=other.client_secret)
    rp = make_rp()
    url_other, _ = await other_rp.begin_login()
    _, pending = await rp.begin_login()
    stolen = await provider.authorize(url_other, "dave")
    injected = {"code": stolen["code"], "state": pending.state}
    await expect_refusal("oidc_token_exchange_failed", rp.complete_login(pending, injected))


# -- ID token checks ------------------------------------------------------------------------------


async def test_an_id_token_for_another_audience_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("erin", {"email": "erin@example.com", "email_verified": True})
    other = provider.register_client()
    other_rp = make_rp(client_id=other.client_id, client_secret=other.client_secret)
    url, pending = await other_rp.begin_login()
    tokens = await other_rp.exchange_code(pending, (await provider.authorize(url, "erin"))["code"])
    assert tokens.id_token is not None
    # The provider's genuine, validly signed token, but minted for the other client.
    assert (await other_rp.verify_id_token(tokens.id_token, nonce=pending.nonce)).subject == "erin"
    error = await expect_refusal("oidc_wrong_audience", make_rp().verify_id_token(tokens.id_token, nonce=pending.nonce))
    assert other.client_id in error.message


async def test_an_id_token_from_another_issuer_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("frank", {"email": "frank@example.com", "email_verified": True})
    # Reached as "localhost", the provider signs with issuer http://localhost:PORT (same keys).
    elsewhere = make_rp(issuer=provider.localhost_issuer)
    url, pending = await elsewhere.begin_login()
    tokens = await elsewhere.exchange_code(pending, (await provider.authorize(url, "frank"))["code"])
    assert tokens.id_token is not None
    error = await expect_refusal("oidc_wrong_issuer", make_rp().verify_id_token(tokens.id_token, nonce=pending.nonce))
    assert provider.localhost_issuer in error.message


async def test_an_issuer_that_differs_from_the_metadata_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    # Discovery strips the trailing slash, but the metadata's issuer must still equal the setting exactly.
    rp = make_rp(issuer=provider.issuer + "/")
    error = await expect_refusal("oidc_wrong_issuer", rp.begin_login())
    assert provider.issuer in error.message


async def test_a_callback_naming_another_issuer_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    rp = make_rp()
    url, pending = await rp.begin_login()
    callback = await provider.authorize(url, "grace@example.com")
    mixed_up = {**callback, "iss": "https://attacker.example"}
    await expect_refusal("oidc_wrong_issuer", rp.complete_login(pending, mixed_up))


async def test_an_id_token_answering_another_request_is_refused_by_nonce(
    provider: OidcProvider, make_rp: MakeRp
) -> None:
    provider.set_user("heidi", {"email": "heidi@example.com", "email_verified": True})
    rp = make_rp()
    _, victim = await rp.begin_login()
    url_attacker, attacker = await rp.begin_login()
    injected_code = (await provider.authorize(url_attacker, "heidi"))["code"]
    # This provider does not enforce PKCE, so the code redeems; the nonce still ties the token to
    # the attacker's request, not the victim's.
    await expect_refusal(
        "oidc_nonce_mismatch", rp.complete_login(victim, {"code": injected_code, "state": victim.state})
    )
    assert attacker.nonce != victim.nonce


async def test_an_expired_id_token_is_refused_beyond_the_leeway(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("ivan", {"email": "ivan@example.com", "email_verified": True})
    rp = make_rp()
    url, pending = await rp.begin_login()
    tokens = await rp.exchange_code(pending, (await provider.authorize(url, "ivan"))["code"])
    assert tokens.id_token is not None
    exp_ms = _claims(tokens.id_token)["exp"] * 1000
    within_leeway = exp_ms + (CLOCK_LEEWAY_S - 5) * 1000
    assert (await rp.verify_id_token(tokens.id_token, nonce=pending.nonce, now_ms=within_leeway)).subject == "ivan"
    past = exp_ms + (CLOCK_LEEWAY_S + 1) * 1000
    await expect_refusal("oidc_token_expired", rp.verify_id_token(tokens.id_token, nonce=pending.nonce, now_ms=past))


async def test_a_tampered_or_unsigned_id_token_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("judy", {"email": "judy@example.com", "email_verified": True})
    rp = make_rp()
    url, pending = await rp.begin_login()
    tokens = await rp.exchange_code(pending, (await provider.authorize(url, "judy"))["code"])
    assert tokens.id_token is not None
    header, _, signature = tokens.id_token.split(".")
    claims = {**_claims(tokens.id_token), "sub": "mallory"}
    tampered = f"{header}.{_b64(claims)}.{signature}"
    await expect_refusal("oidc_invalid_token", rp.verify_id_token(tampered, nonce=pending.nonce))
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    await expect_refusal("oidc_invalid_token", rp.verify_id_token(unsigned, nonce=pending.nonce))
    await expect_refusal("oidc_invalid_token", rp.verify_id_token("not.a.jwt", nonce=pending.nonce))
    # Well-formed and signed, but by a key the provider does not publish (with and without a kid).
    stranger = RSAKey.generate_key(2048)
    for header in ({"alg": "RS256", "kid": "rotated-in-by-nobody"}, {"alg": "RS256"}):
        forged = jwt.encode(header, _claims(tokens.id_token), stranger)
        await expect_refusal("oidc_invalid_token", rp.verify_id_token(forged, nonce=pending.nonce))
    assert (await rp.verify_id_token(tokens.id_token, nonce=pending.nonce)).subject == "judy"


async def test_a_token_naming_an_unknown_key_refetches_the_jwks_at_most_so_often(
    provider: OidcProvider, client: RegisteredClient
) -> None:
    provider.set_user("kent", {"email": "kent@example.com", "email_verified": True})
    jwks_fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        if request.url.path == "/jwks":
            jwks_fetches.append(str(request.url))

    config = OidcConfig(provider.issuer, client.client_id, client.client_secret, REDIRECT_URI)
    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        for interval, expected_fetches in ((3600.0, 1), (0.0, 2)):
            jwks_fetches.clear()
            rp = OidcRelyingParty(config, http=http, jwks_refetch_interval_s=interval)
            url, pending = await rp.begin_login()
            tokens = await rp.exchange_code(pending, (await provider.authorize(url, "kent"))["code"])
            assert tokens.id_token is not None
            rotated = jwt.encode(
                {"alg": "RS256", "kid": "next-key"}, _claims(tokens.id_token), RSAKey.generate_key(2048)
            )
            await expect_refusal("oidc_invalid_token", rp.verify_id_token(rotated, nonce=pending.nonce))
            assert len(jwks_fetches) == expected_fetches
            # The cached (or refetched) keys still verify the provider's own token.
            assert (await rp.verify_id_token(tokens.id_token, nonce=pending.nonce)).subject == "kent"
            assert len(jwks_fetches) == expected_fetches


# -- email rules ----------------------------------------------------------------------------------


async def test_an_email_outside_the_allowed_domains_is_refused(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("kim", {"email": "kim@elsewhere.test", "email_verified": True})
    provider.set_user("lee", {"email": "Lee@Example.COM", "email_verified": True})
    provider.set_user("max", {"email": "max@example.com", "email_verified": False})
    rp = make_rp(allowed_email_domains=("example.com",))

    url, pending = await rp.begin_login()
    error = await expect_refusal(
        "oidc_email_domain_not_allowed", rp.complete_login(pending, await provider.authorize(url, "kim"))
    )
    assert "elsewhere.test" in error.message

    url, pending = await rp.begin_login()
    identity = await rp.complete_login(pending, await provider.authorize(url, "lee"))
    assert identity.email_domain == "example.com"

    # An unverified address proves nothing about its domain.
    url, pending = await rp.begin_login()
    await expect_refusal("oidc_email_unverified", rp.complete_login(pending, await provider.authorize(url, "max")))


async def test_an_unverified_email_signs_in_but_never_links_by_email(provider: OidcProvider, make_rp: MakeRp) -> None:
    provider.set_user("nina", {"email": "nina@example.com", "email_verified": False})
    provider.set_user("oscar", {"email": "oscar@example.com"})  # no email_verified claim at all
    rp = make_rp()
    for sub in ("nina", "oscar"):
        url, pending = await rp.begin_login()
        identity = await rp.complete_login(pending, await provider.authorize(url, sub))
        assert identity.subject == sub
        assert identity.email == f"{sub}@example.com"
        assert identity.email_verified is False
        assert identity.may_link_by_email is False


# -- discovery ------------------------------------------------------------------------------------


async def test_an_unreachable_provider_is_reported(make_rp: MakeRp) -> None:
    rp = make_rp(issuer=f"http://127.0.0.1:{free_port()}")
    await expect_refusal("oidc_discovery_failed", rp.begin_login())


# -- helpers --------------------------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
