"""Values of the read side: cursors, time bounds, statuses and pool names."""

from __future__ import annotations

import pytest

from aiki.platform.domain import queries
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.domain.ids import new_id
from aiki.worker_sdk import protocol


def test_cursor_round_trips_and_is_opaque() -> None:
    run_id = new_id()
    cursor = queries.encode_cursor(run_id)
    assert run_id not in cursor
    assert queries.decode_cursor(cursor) == run_id
    assert queries.decode_cursor(None) is None


# A raw run id is not a cursor either (cursors are opaque; a fixed id keeps xdist's collection stable).
@pytest.mark.parametrize(
    "bad", ["x", "!!!", "01a21254-f818-75c1-bbdf-dc847560f9a4", queries.encode_cursor("not-an-id")]
)
def test_foreign_cursors_are_refused_naming_the_parameter(bad: str) -> None:
    with pytest.raises(InputInvalid) as caught:
        queries.decode_cursor(bad)
    assert caught.value.field == "cursor"


def test_times_are_milliseconds_or_iso_8601() -> None:
    assert queries.parse_time("1700000000000", "t") == 1_700_000_000_000
    assert queries.parse_time(5, "t") == 5
    assert queries.parse_time("2023-11-14T22:13:20Z", "t") == 1_700_000_000_000
    assert queries.parse_time("2023-11-14T23:13:20+01:00", "t") == 1_700_000_000_000
    assert queries.parse_time("2023-11-14T22:13:20", "t") == 1_700_000_000_000  # naive is UTC
    assert queries.parse_time(None, "t") is None
    for bad in ("", "soon", "2023-13-01", "-5"):
        with pytest.raises(InputInvalid) as caught:
            queries.parse_time(bad, "created_after")
        assert caught.value.field == "created_after"
    with pytest.raises(InputInvalid):
        queries.check_time_range(10, 10)


def test_statuses_accept_repeats_and_commas() -> None:
    assert queries.parse_statuses(["queued,running", "queued", " failed "]) == ("queued", "running", "failed")
    assert queries.parse_statuses(None) == ()
    with pytest.raises(InputInvalid) as caught:
        queries.parse_statuses(["queued,done"])
    assert caught.value.field == "status"


def test_the_default_pool_is_stored_as_no_pool() -> None:
    assert queries.DEFAULT_POOL == protocol.DEFAULT_POOL
    assert queries.normalize_pool(None) is None
    assert queries.normalize_pool("default") is None
    assert queries.normalize_pool("gpu") == "gpu"
    assert queries.normalize_pools([]) == ["default"]
    assert queries.normalize_pools(["gpu", "gpu", "default"]) == ["gpu", "default"]
    with pytest.raises(InputInvalid):
        queries.normalize_pool(" ")


def test_a_filter_with_nothing_set_is_empty() -> None:
    assert queries.RunFilter().is_empty()
    assert not queries.RunFilter(statuses=("queued",)).is_empty()
    assert queries.RunFilter(schedule_id="s1").reference_prefix == "schedule:s1:"
