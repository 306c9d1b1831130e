"""Ids are UUIDv7 strings: valid, time-ordered across milliseconds, unique."""

from __future__ import annotations

import itertools
import re
import time
import uuid

import pytest

from aiki.platform.domain.ids import new_id, now_ms

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _ms_of(value: str) -> int:
    return uuid.UUID(value).int >> 80


def test_new_id_is_a_uuid_version_7() -> None:
    before = now_ms()
    value = new_id()
    after = now_ms()
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value  # canonical, lowercase, 36 characters
    assert len(value) == 36
    assert CANONICAL.match(value)
    assert before <= _ms_of(value) <= after


def _wait_for_next_ms() -> None:
    start = now_ms()
    deadline = time.monotonic() + 1
    while now_ms() == start:
        assert time.monotonic() < deadline, "the clock did not advance"
        time.sleep(0.0005)


def test_ids_from_later_milliseconds_sort_after_earlier_ones() -> None:
    ids = []
    for _ in range(20):
        ids.append(new_id())
        _wait_for_next_ms()
    assert ids == sorted(ids)
    assert [_ms_of(i) for i in ids] == sorted({_ms_of(i) for i in ids})


@pytest.mark.parametrize(
    "millis",
    [
        [0, 1, 2],
        [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_255, 1_700_000_000_256],
        [0xF_FFFF_FFFF, 0x10_0000_0000, 0xFFFF_FFFF_FFFE, 0xFFFF_FFFF_FFFF],
    ],
)
def test_string_order_follows_the_clock(monkeypatch: pytest.MonkeyPatch, millis: list[int]) -> None:
    """Across hex-digit and byte boundaries too: string order is the order of creation."""
    ids = []
    for ms in millis:
        # new_id reads the clock through time.time_ns; a fixed clock makes the order deterministic.
        monkeypatch.setattr(time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        ids.extend(new_id() for _ in range(50))
        monkeypatch.undo()
    assert [_ms_of(i) for i in ids] == [ms for ms in millis for _ in range(50)]
    for earlier_ms, later_ms in itertools.pairwise(millis):
        earlier = [i for i in ids if _ms_of(i) == earlier_ms]
        later = [i for i in ids if _ms_of(i) == later_ms]
        assert max(earlier) < min(later)
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_ten_thousand_ids_are_unique() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(CANONICAL.match(i) for i in ids)
