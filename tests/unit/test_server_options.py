"""``server()`` refuses option values it cannot honour, naming the option."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aiki import database, server
from aiki.platform.db.engine import Database


@pytest.mark.parametrize("value", [timedelta(milliseconds=-1), timedelta(seconds=31)])
def test_sleep_hold_max_outside_0_to_30_seconds_is_refused(value: timedelta) -> None:
    with pytest.raises(ValueError, match="sleep_hold_max"):
        server(db=database(url="sqlite+aiosqlite:///:memory:"), sleep_hold_max=value)


@pytest.mark.parametrize(("value", "ms"), [(timedelta(0), 0), (timedelta(seconds=30), 30_000)])
def test_sleep_hold_max_bounds_are_accepted(value: timedelta, ms: int) -> None:
    aiki_server = server(db=database(url="sqlite+aiosqlite:///:memory:"), sleep_hold_max=value)
    assert aiki_server.services.settings.sleep_hold_max_ms == ms


def _memory() -> Database:
    return database(url="sqlite+aiosqlite:///:memory:")


@pytest.mark.parametrize(("raw", "allowed"), [("1", True), ("true", True), ("0", False), ("false", False), ("", False)])
def test_endpoints_allow_private_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, allowed: bool
) -> None:
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", raw)
    assert server(db=_memory()).services.settings.endpoints_allow_private is allowed


def test_endpoints_allow_private_given_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", "1")
    assert not server(db=_memory(), endpoints_allow_private=False).services.settings.endpoints_allow_private
    monkeypatch.delenv("AIKI_ENDPOINTS_ALLOW_PRIVATE")
    assert server(db=_memory(), endpoints_allow_private=True).services.settings.endpoints_allow_private
    assert not server(db=_memory()).services.settings.endpoints_allow_private


def test_a_malformed_endpoints_allow_private_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIKI_ENDPOINTS_ALLOW_PRIVATE", "maybe")
    with pytest.raises(ValueError, match="AIKI_ENDPOINTS_ALLOW_PRIVATE must be 1/true or 0/false, got 'maybe'"):
        server(db=_memory())


def test_without_iam_the_secret_box_comes_from_aiki_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIKI_SECRET_KEY", raising=False)
    monkeypatch.delenv("AIKI_SECRET_KEY_PREVIOUS", raising=False)
    assert server(db=_memory()).services.secret_box is None
    monkeypatch.setenv("AIKI_SECRET_KEY", "an-embedded-server-secret-0123456789-abcdefghijkl")
    box = server(db=_memory()).services.secret_box
    assert box is not None
    assert box.open(box.seal("whsec_x", context="e"), context="e") == "whsec_x"
    monkeypatch.setenv("AIKI_SECRET_KEY", "short")
    with pytest.raises(ValueError, match="AIKI_SECRET_KEY"):
        server(db=_memory())
