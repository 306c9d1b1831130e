"""OIDC settings and the ID token claim rules that a provider cannot easily be made to break."""

from __future__ import annotations

from typing import Any

import pytest

from aiki.iam.oidc import OidcConfig, OidcError, PendingLogin
from aiki.iam.oidc_tokens import VerifiedIdentity, check_email_domain, check_id_token_claims

ISSUER = "https://id.example.com"
CLIENT = "aiki-dashboard"
NOW = 1_700_000_000.0


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "user-1",
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": "n-1",
        "email": "a@example.com",
        "email_verified": True,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def check(**overrides: Any) -> VerifiedIdentity:
    return check_id_token_claims(
        claims(**overrides), issuer=ISSUER, client_id=CLIENT, nonce="n-1", now_s=NOW, leeway_s=60
    )


def refused(code: str, **overrides: Any) -> OidcError:
    with pytest.raises(OidcError) as caught:
        check(**overrides)
    assert caught.value.code == code, caught.value.message
    return caught.value


def test_valid_claims_give_the_identity() -> None:
    identity = check(name="Ada")
    assert (identity.issuer, identity.subject, identity.email, identity.name) == (
        ISSUER,
        "user-1",
        "a@example.com",
        "Ada",
    )
    assert identity.may_link_by_email


def test_audience_rules() -> None:
    assert check(aud=[CLIENT]).subject == "user-1"
    assert check(aud=[CLIENT, "api"], azp=CLIENT).subject == "user-1"
    refused("oidc_wrong_audience", aud="someone-else")
    refused("oidc_wrong_audience", aud=["someone-else", "api"])
    # Several audiences need azp naming us; a present azp must name us.
    refused("oidc_wrong_audience", aud=[CLIENT, "api"])
    refused("oidc_wrong_audience", aud=[CLIENT, "api"], azp="api")
    refused("oidc_wrong_audience", azp="api")
    refused("oidc_wrong_audience", aud=None)


def test_issuer_must_match_exactly() -> None:
    refused("oidc_wrong_issuer", iss=ISSUER + "/")
    refused("oidc_wrong_issuer", iss=None)


def test_time_rules_allow_the_leeway_only() -> None:
    assert check(exp=NOW - 59).subject == "user-1"
    refused("oidc_token_expired", exp=NOW - 61)
    refused("oidc_invalid_token", exp=None)
    refused("oidc_invalid_token", exp="soon")
    refused("oidc_invalid_token", iat=NOW + 120)


def test_nonce_and_subject_are_required() -> None:
    refused("oidc_nonce_mismatch", nonce="n-2")
    refused("oidc_nonce_mismatch", nonce=None)
    refused("oidc_invalid_token", sub=None)
    refused("oidc_invalid_token", sub="")
    refused("oidc_invalid_token", sub="x" * 256)


def test_email_verified_is_read_strictly() -> None:
    assert check(email_verified="true").email_verified is True  # as some providers send it
    for value in (None, False, "false", "yes", 1):
        identity = check(email_verified=value)
        assert identity.email_verified is False
        assert not identity.may_link_by_email
    assert not check(email=None).may_link_by_email


def test_email_domain_rules() -> None:
    ok = check(email="Ann@Example.COM")
    check_email_domain(ok, None)
    check_email_domain(ok, ("example.com",))
    for identity, code in (
        (check(email="ann@sub.example.com"), "oidc_email_domain_not_allowed"),  # exact domains only
        (check(email=None), "oidc_email_domain_not_allowed"),
        (check(email_verified=False), "oidc_email_unverified"),
    ):
        with pytest.raises(OidcError) as caught:
            check_email_domain(identity, ("example.com",))
        assert caught.value.code == code


# -- settings -------------------------------------------------------------------------------------

GOOD = {
    "issuer": ISSUER,
    "client_id": CLIENT,
    "client_secret": "s3cret",
    "redirect_uri": "https://aiki.example.com/auth/oidc/callback",
}


def bad_setting(field: str, **overrides: Any) -> OidcError:
    with pytest.raises(OidcError) as caught:
        OidcConfig(**{**GOOD, **overrides})
    assert caught.value.code == "oidc_config_invalid"
    assert caught.value.field == field
    assert field in caught.value.message
    return caught.value


def test_config_errors_name_the_setting() -> None:
    bad_setting("issuer", issuer="")
    bad_setting("issuer", issuer="http://id.example.com")  # plain http off loopback
    bad_setting("issuer", issuer="https://id.example.com?tenant=1")
    bad_setting("client_id", client_id=" ")
    bad_setting("client_secret", client_secret="")
    bad_setting("redirect_uri", redirect_uri="/auth/oidc/callback")
    bad_setting("scopes", scopes=("email", "profile"))
    bad_setting("scopes", scopes="openid email")
    bad_setting("allowed_email_domains", allowed_email_domains=())
    bad_setting("allowed_email_domains", allowed_email_domains=("bob@example.com",))


def test_config_normalizes_and_hides_its_secret() -> None:
    config = OidcConfig(**GOOD, scopes=["openid", "email"], allowed_email_domains=["@Example.COM"])  # type: ignore[arg-type]
    assert config.scopes == ("openid", "email")
    assert config.allowed_email_domains == ("example.com",)
    assert "s3cret" not in repr(config)
    assert OidcConfig(**{**GOOD, "issuer": "http://127.0.0.1:8080"}).issuer == "http://127.0.0.1:8080"


def test_config_from_environment_names_the_variable() -> None:
    assert OidcConfig.from_env({}) is None
    env = {
        "AIKI_OIDC_ISSUER": ISSUER,
        "AIKI_OIDC_CLIENT_ID": CLIENT,
        "AIKI_OIDC_CLIENT_SECRET": "s3cret",
        "AIKI_OIDC_ALLOWED_EMAIL_DOMAINS": "example.com, Example.org",
    }
    config = OidcConfig.from_env(env, default_redirect_uri=GOOD["redirect_uri"])
    assert config is not None
    assert config.redirect_uri == GOOD["redirect_uri"]
    assert config.allowed_email_domains == ("example.com", "example.org")
    assert config.scopes == ("openid", "email", "profile")

    with pytest.raises(OidcError) as caught:
        OidcConfig.from_env({**env, "AIKI_OIDC_CLIENT_SECRET": ""}, default_redirect_uri=GOOD["redirect_uri"])
    assert caught.value.field == "AIKI_OIDC_CLIENT_SECRET"
    assert "AIKI_OIDC_CLIENT_SECRET" in caught.value.message
    with pytest.raises(OidcError) as caught:
        OidcConfig.from_env(env)
    assert caught.value.field == "AIKI_OIDC_REDIRECT_URI"
    with pytest.raises(OidcError) as caught:
        OidcConfig.from_env({"AIKI_OIDC_CLIENT_ID": CLIENT})
    assert caught.value.field == "AIKI_OIDC_ISSUER"


def test_unreadable_stored_pending_login_is_a_state_mismatch() -> None:
    for text in ("{not json", '{"state": "s"}', "[]"):
        with pytest.raises(OidcError) as caught:
            PendingLogin.from_json(text)
        assert caught.value.code == "oidc_state_mismatch"
