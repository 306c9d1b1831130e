"""Schedule math: next occurrences of cron rules in a time zone (across DST) and of intervals."""

from __future__ import annotations

from datetime import datetime

import pytest

from aiki.platform.domain import schedules as s
from aiki.platform.domain.errors import InputInvalid


def ms(text: str) -> int:
    """An ISO 8601 time with offset (or Z) as epoch milliseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def iso(at: int) -> str:
    return s.occurrence_key(at)


def following(rule: s.Rule, start: str, n: int) -> list[str]:
    out, t = [], ms(start)
    for _ in range(n):
        t = s.next_after(rule, t)
        out.append(iso(t))
    return out


BERLIN = "Europe/Berlin"

NEXT_CASES = [
    # (cron, timezone, after, expected next occurrences in UTC)
    ("0 9 * * *", BERLIN, "2026-01-10T07:59:59Z", ["2026-01-10T08:00:00Z", "2026-01-11T08:00:00Z"]),
    ("0 9 * * *", BERLIN, "2026-01-10T08:00:00Z", ["2026-01-11T08:00:00Z"]),  # strictly after
    # 09:00 Berlin moves from 08:00 UTC (CET) to 07:00 UTC (CEST) over the spring change.
    ("0 9 * * *", BERLIN, "2026-03-28T00:00:00Z", ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"]),
    # ... and back over the autumn change.
    ("0 9 * * *", BERLIN, "2026-10-24T00:00:00Z", ["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z"]),
    # 02:30 does not exist on 2026-03-29 (02:00 -> 03:00): fires when the gap ends, 03:00 CEST.
    (
        "30 2 * * *",
        BERLIN,
        "2026-03-27T12:00:00Z",
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
    ),
    # 02:30 happens twice on 2026-10-25 (03:00 -> 02:00): fires once, the first time (CEST).
    (
        "30 2 * * *",
        BERLIN,
        "2026-10-23T12:00:00Z",
        ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    ),
    # Half-hourly through the spring gap: 02:00 and 02:30 collapse into 03:00 CEST.
    (
        "*/30 * * * *",
        BERLIN,
        "2026-03-29T00:00:00Z",
        ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z"],
    ),
    # Half-hourly through the autumn overlap: the repeated 02:00 and 02:30 (CET) do not fire again.
    (
        "*/30 * * * *",
        BERLIN,
        "2026-10-24T23:59:00Z",
        ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z", "2026-10-25T02:30:00Z"],
    ),
    # Asking from inside the repeated hour (02:10 CET = 01:10 UTC) skips the hour's first pass.
    ("30 2 * * *", BERLIN, "2026-10-25T01:10:00Z", ["2026-10-26T01:30:00Z"]),
    # Asking from just after the spring gap: today's (moved) 02:30 already fired at 03:00.
    ("30 2 * * *", BERLIN, "2026-03-29T01:10:00Z", ["2026-03-30T00:30:00Z"]),
    # A 30-minute DST shift (Lord Howe, +10:30 -> +11:00, 02:00 -> 02:30 on 2026-10-04): 02:15 fires at 02:30.
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T12:00:00Z", ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z"]),
    ("0 0 * * *", "UTC", "2026-02-28T12:00:00Z", ["2026-03-01T00:00:00Z"]),
    ("@hourly", "UTC", "2026-02-28T12:00:00Z", ["2026-02-28T13:00:00Z"]),
    ("0 12 * * 1", "America/New_York", "2026-03-06T00:00:00Z", ["2026-03-09T16:00:00Z", "2026-03-16T16:00:00Z"]),
]


@pytest.mark.parametrize(("cron", "tz", "after", "expected"), NEXT_CASES)
def test_cron_next_occurrences(cron: str, tz: str, after: str, expected: list[str]) -> None:
    rule = s.parse_rule(cron, None, tz)
    assert following(rule, after, len(expected)) == expected


INTERVAL_CASES = [
    (3_600_000, "2026-05-01T10:17:00Z", ["2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"]),
    (3_600_000, "2026-05-01T11:00:00Z", ["2026-05-01T12:00:00Z"]),
    (90_000, "2026-05-01T00:00:00Z", ["2026-05-01T00:01:30Z", "2026-05-01T00:03:00Z"]),
    (1_500, "2026-05-01T00:00:00Z", ["2026-05-01T00:00:01.500Z", "2026-05-01T00:00:03Z"]),
]


@pytest.mark.parametrize(("every_ms", "after", "expected"), INTERVAL_CASES)
def test_interval_occurrences_are_aligned_to_the_epoch(every_ms: int, after: str, expected: list[str]) -> None:
    assert following(s.parse_rule(None, every_ms, None), after, len(expected)) == expected


def test_intervals_ignore_daylight_saving() -> None:
    rule = s.parse_rule(None, 3_600_000, "UTC")
    got = following(rule, "2026-03-29T00:00:00Z", 3)
    assert got == ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z"]


def test_between_lists_occurrences_in_a_half_open_range_up_to_a_limit() -> None:
    rule = s.parse_rule(None, 60_000, None)
    start = ms("2026-05-01T00:00:00Z")
    assert s.between(rule, start, start + 180_000, 10) == [start + 60_000, start + 120_000, start + 180_000]
    assert s.between(rule, start, start + 180_000, 2) == [start + 60_000, start + 120_000]
    assert s.between(rule, start, start + 59_999, 10) == []


@pytest.mark.parametrize(
    ("cron", "first_due", "now", "expected"),
    [
        ("*/5 * * * *", "2026-05-01T00:05:00Z", "2026-05-01T00:27:00Z", "2026-05-01T00:25:00Z"),
        ("*/5 * * * *", "2026-05-01T00:05:00Z", "2026-05-01T00:05:00Z", "2026-05-01T00:05:00Z"),
        # A month of missed minutes: the latest is found without walking through all of them.
        ("* * * * *", "2026-04-01T00:00:00Z", "2026-05-01T10:30:30Z", "2026-05-01T10:30:00Z"),
        # Rare rule, long downtime.
        ("0 0 1 1 *", "2024-01-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ],
)
def test_latest_due(cron: str, first_due: str, now: str, expected: str) -> None:
    rule = s.parse_rule(cron, None, "UTC")
    latest = s.latest_due(rule, ms(first_due), ms(now))
    assert latest is not None
    assert iso(latest) == expected


def test_latest_due_is_none_before_the_first_due_time() -> None:
    rule = s.parse_rule("*/5 * * * *", None, "UTC")
    assert s.latest_due(rule, ms("2026-05-01T00:05:00Z"), ms("2026-05-01T00:04:59Z")) is None


def test_run_reference_names_schedule_and_occurrence() -> None:
    assert s.run_reference("sid", ms("2026-03-29T01:00:00Z")) == "schedule:sid:2026-03-29T01:00:00Z"


@pytest.mark.parametrize(
    ("cron", "every_ms", "tz", "field"),
    [
        (None, None, None, "$.cron"),
        ("0 9 * * *", 60_000, None, "$.cron"),
        ("0 9 * *", None, None, "$.cron"),
        ("0 9 * * * *", None, None, "$.cron"),  # seconds are not supported
        ("61 9 * * *", None, None, "$.cron"),
        ("not cron", None, None, "$.cron"),
        ("0 0 30 2 *", None, None, "$.cron"),  # never fires
        ("0 9 * * *", None, "Mars/Olympus", "$.timezone"),
        (None, 999, None, "$.every_ms"),
        (None, 0, None, "$.every_ms"),
        (None, 60_000, "Europe/Berlin", "$.timezone"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(
    cron: str | None, every_ms: int | None, tz: str | None, field: str
) -> None:
    with pytest.raises(InputInvalid) as info:
        s.parse_rule(cron, every_ms, tz)
    assert info.value.field == field


def test_cron_whitespace_and_alias_case_are_normalized() -> None:
    assert s.parse_rule("  0  9 * *   * ", None, None).cron == "0 9 * * *"
    assert s.parse_rule("@DAILY", None, None).cron == "@daily"
