"""IamConfig's key-cache TTL: validated, and read from the environment with errors naming the variable."""

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
