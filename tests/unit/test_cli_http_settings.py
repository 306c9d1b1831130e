"""``aiki server``'s HTTP settings read from flags and the environment: checked, errors name them."""

from __future__ import annotations

import pytest

from aiki.cli import settings


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, None, {}),
        (None, "600", {"api_requests_per_minute": 600}),
        (None, " off ", {"api_requests_per_minute": None}),
        (None, "0", {"api_requests_per_minute": None}),
        ("120", "600", {"api_requests_per_minute": 120}),
        ("OFF", None, {"api_requests_per_minute": None}),
    ],
)
def test_api_rate_limit(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str | None, expected: dict[str, object]
) -> None:
    if env is None:
        monkeypatch.delenv("AIKI_API_RATE_LIMIT", raising=False)
    else:
        monkeypatch.setenv("AIKI_API_RATE_LIMIT", env)
    assert settings.api_rate_limit(flag) == expected


@pytest.mark.parametrize(
    ("flag", "env", "named"),
    [(None, "lots", "AIKI_API_RATE_LIMIT"), (None, "-5", "AIKI_API_RATE_LIMIT"), ("1.5", "10", "--api-rate-limit")],
)
def test_a_bad_api_rate_limit_names_its_source(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str, named: str
) -> None:
    monkeypatch.setenv("AIKI_API_RATE_LIMIT", env)
    with pytest.raises(settings.CliError, match=named):
        settings.api_rate_limit(flag)


def test_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIKI_TRUSTED_PROXIES", raising=False)
    assert settings.trusted_proxies(None) is None
    monkeypatch.setenv("AIKI_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert settings.trusted_proxies(None) == "10.0.0.0/8, 127.0.0.1"
    assert settings.trusted_proxies("192.0.2.1") == "192.0.2.1"
    with pytest.raises(settings.CliError, match="--trusted-proxies"):
        settings.trusted_proxies("proxy.internal")
    monkeypatch.setenv("AIKI_TRUSTED_PROXIES", "10.0.0.0/40")
    with pytest.raises(settings.CliError, match="AIKI_TRUSTED_PROXIES"):
        settings.trusted_proxies(None)


def test_the_log_format_is_checked_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIKI_LOG_FORMAT", "xml")
    with pytest.raises(settings.CliError, match="AIKI_LOG_FORMAT must be json or text"):
        settings.setup_logging("server")


def test_endpoints_allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", raising=False)
    assert settings.endpoints_allow_private(False) is False
    assert settings.endpoints_allow_private(True) is True
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", "true")
    assert settings.endpoints_allow_private(False) is True
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", "0")
    assert settings.endpoints_allow_private(False) is False
    assert settings.endpoints_allow_private(True) is True
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", "sometimes")
    with pytest.raises(settings.CliError, match="AIKI_ENDPOINTS_ALLOW_PRIVATE must be 1/true or 0/false"):
        settings.endpoints_allow_private(False)


def test_the_server_command_takes_endpoints_allow_private() -> None:
    from aiki.cli import build_parser

    assert build_parser().parse_args(["server", "--endpoints-allow-private"]).endpoints_allow_private is True
    assert build_parser().parse_args(["server"]).endpoints_allow_private is False
