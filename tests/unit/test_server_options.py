"""``server()`` refuses option values it cannot honour, naming the option."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aiki import database, server


@pytest.mark.parametrize("value", [timedelta(milliseconds=-1), timedelta(seconds=31)])
def test_sleep_hold_max_outside_0_to_30_seconds_is_refused(value: timedelta) -> None:
    with pytest.raises(ValueError, match="sleep_hold_max"):
        server(db=database(url="sqlite+aiosqlite:///:memory:"), sleep_hold_max=value)


@pytest.mark.parametrize(("value", "ms"), [(timedelta(0), 0), (timedelta(seconds=30), 30_000)])
def test_sleep_hold_max_bounds_are_accepted(value: timedelta, ms: int) -> None:
    aiki_server = server(db=database(url="sqlite+aiosqlite:///:memory:"), sleep_hold_max=value)
    assert aiki_server.services.settings.sleep_hold_max_ms == ms
