"""IamConfig: the key-cache TTL and the abuse limits, read from the environment; errors name the variable."""

from __future__ import annotations

import pytest

from aiki.iam.config import IamConfig, IamConfigError

GOOD_SECRET = "s3cret-0123456789-abcdefghijklmnopqrstuvwxyz"
ENV = {"AIKI_SECRET_KEY": GOOD_SECRET, "AIKI_BASE_URL": "https://aiki.example.com"}


def test_the_ttl_is_read_from_the_environment() -> None:
    assert IamConfig.from_env(ENV).api_key_cache_ttl_s == 5.0
    assert IamConfig.from_env({**ENV, "AIKI_API_KEY_CACHE_TTL_S": "0"}).api_key_cache_ttl_s == 0
    assert IamConfig.from_env({**ENV, "AIKI_API_KEY_CACHE_TTL_S": " 2.5 "}).api_key_cache_ttl_s == 2.5


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "3601"])
def test_a_bad_ttl_names_the_variable(value: str) -> None:
    with pytest.raises(IamConfigError, match="AIKI_API_KEY_CACHE_TTL_S"):
        IamConfig.from_env({**ENV, "AIKI_API_KEY_CACHE_TTL_S": value})


def test_a_bad_ttl_given_in_code_is_refused() -> None:
    with pytest.raises(IamConfigError, match="AIKI_API_KEY_CACHE_TTL_S"):
        IamConfig(secret_key=GOOD_SECRET, base_url="https://aiki.example.com", api_key_cache_ttl_s=-0.5)


def test_abuse_limits_have_defaults_and_are_read_from_the_environment() -> None:
    config = IamConfig.from_env(ENV)
    assert (config.throttle_signup_per_ip, config.throttle_signup_global) == (5, 100)
    assert (config.login_free_failures, config.login_max_delay_s, config.login_max_per_ip) == (5, 900, 100)
    assert config.password_hash_threads is None  # CPUs - 1
    env = {
        **ENV,
        "AIKI_THROTTLE_LOGIN_PER_IP": "7",
        "AIKI_THROTTLE_PASSWORD_RESET_GLOBAL": "0",
        "AIKI_LOGIN_FREE_FAILURES": "3",
        "AIKI_PASSWORD_HASH_THREADS": "2",
        "AIKI_PASSWORD_HASH_QUEUE": "0",
    }
    config = IamConfig.from_env(env)
    assert config.throttle_login_per_ip == 7
    assert config.throttle_password_reset_global == 0
    assert config.login_free_failures == 3
    assert (config.password_hash_threads, config.password_hash_queue) == (2, 0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AIKI_THROTTLE_SIGNUP_PER_IP", "many"),
        ("AIKI_THROTTLE_INVITATION_ACCEPT_GLOBAL", "-1"),
        ("AIKI_LOGIN_FREE_FAILURES", "0"),
        ("AIKI_PASSWORD_HASH_THREADS", "0"),
        ("AIKI_THROTTLE_WINDOW_S", "1.5"),
    ],
)
def test_a_bad_abuse_limit_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(IamConfigError, match=variable):
        IamConfig.from_env({**ENV, variable: value})
