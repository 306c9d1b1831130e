"""Schedule math: when does a cron or interval rule fire next? Pure functions of time.

Every time is integer milliseconds since the Unix epoch (UTC), and ``now`` is always an argument,
so tests drive a fake clock.

* **Intervals** (``every_ms``) are aligned to the Unix epoch: an hourly schedule fires at the top of
  each UTC hour, whenever it was activated. The time zone plays no part.
* **Cron** expressions (5 fields, or ``@hourly``-style aliases) are read in the schedule's IANA time
  zone, as wall-clock times. Daylight-saving changes are handled so each wall-clock time fires at
  most once and no day loses a daily run:

  - a local time that does not exist (the hour skipped when clocks go forward) fires at the first
    instant after the gap: ``30 2 * * *`` in Europe/Berlin on 2026-03-29 fires at 03:00 CEST
    (01:00 UTC). Several skipped times collapse into that one occurrence;
  - a local time that happens twice (the hour repeated when clocks go back) fires once, at its
    first occurrence: ``30 2 * * *`` on 2026-10-25 fires at 02:30 CEST (00:30 UTC), not again at
    02:30 CET.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from aiki.platform.domain.errors import InputInvalid

OVERLAP_POLICIES = ("allow", "skip", "cancel_previous")
MIN_EVERY_MS = 1_000
# The most cron candidates examined for one answer: a minute-level expression walks through at
# most an hour of repeated local time; anything beyond this is a rule that (almost) never fires.
_MAX_CANDIDATES = 5_000
_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated schedule rule: exactly one of ``cron`` and ``every_ms`` is set."""

    cron: str | None
    every_ms: int | None
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_rule(cron: str | None, every_ms: int | None, timezone: str | None) -> Rule:
    """Validate a rule as a user wrote it; raise ``InputInvalid`` naming the field at fault."""
    if (cron is None) == (every_ms is None):
        raise InputInvalid("give exactly one of cron and every", field="$.cron")
    tz = timezone or "UTC"
    if every_ms is not None:
        if every_ms < MIN_EVERY_MS:
            raise InputInvalid(f"every must be at least {MIN_EVERY_MS} ms, got {every_ms}", field="$.every_ms")
        if tz != "UTC":
            raise InputInvalid("timezone applies to cron schedules only; intervals count in UTC", field="$.timezone")
        return Rule(cron=None, every_ms=every_ms, timezone="UTC")
    assert cron is not None
    expr = " ".join(cron.split())
    if expr.lower() in _ALIASES:
        expr = expr.lower()
    elif len(expr.split(" ")) != 5 or not croniter.is_valid(expr):
        raise InputInvalid(
            f"cron {cron!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week)",
            field="$.cron",
        )
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputInvalid(f"timezone {tz!r} is not an IANA time zone name", field="$.timezone") from None
    rule = Rule(cron=expr, every_ms=None, timezone=tz)
    try:
        next_after(rule, 0)
    except ValueError:
        raise InputInvalid(f"cron {cron!r} never fires", field="$.cron") from None
    return rule


def next_after(rule: Rule, after_ms: int) -> int:
    """The first occurrence strictly after ``after_ms``.

    Raises:
        ValueError: The cron expression has no occurrence in the foreseeable future.
    """
    if rule.every_ms is not None:
        return (after_ms // rule.every_ms + 1) * rule.every_ms
    assert rule.cron is not None
    zone = rule.zone
    start = _local_naive(after_ms, zone)
    try:
        candidates = croniter(rule.cron, start)
        for _ in range(_MAX_CANDIDATES):
            instant = _instant(candidates.get_next(datetime), zone)
            if instant > after_ms:
                return instant
    except (KeyError, ValueError, OverflowError) as exc:  # croniter's "no match" errors derive from these
        raise ValueError(f"cron {rule.cron!r} has no occurrence after {after_ms}") from exc
    raise ValueError(f"cron {rule.cron!r} has no occurrence near {after_ms}")


def between(rule: Rule, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Occurrences in ``(after_ms, until_ms]``, oldest first, at most ``limit`` of them."""
    found: list[int] = []
    t = after_ms
    while len(found) < limit:
        t = next_after(rule, t)
        if t > until_ms:
            break
        found.append(t)
    return found


def latest_due(rule: Rule, first_due_ms: int, now_ms: int) -> int | None:
    """The last occurrence in ``[first_due_ms, now_ms]`` (None if there is none).

    Looks back in growing windows, so a minute-level rule that missed a month of occurrences
    does not walk through all of them.
    """
    if first_due_ms > now_ms:
        return None
    floor = first_due_ms - 1
    window = 3_600_000
    while True:
        lo = max(floor, now_ms - window)
        last = None
        t = lo
        while True:
            t = next_after(rule, t)
            if t > now_ms:
                break
            last = t
        if last is not None or lo == floor:
            return last
        window *= 8


def occurrence_key(at_ms: int) -> str:
    """The occurrence's name inside run reference ids: ISO 8601 in UTC, e.g. ``2026-03-29T01:00:00Z``."""
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = at_ms % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def run_reference(schedule_id: str, at_ms: int) -> str:
    """The reference id of the run of one occurrence: ``schedule:{schedule_id}:{occurrence}``."""
    return f"schedule:{schedule_id}:{occurrence_key(at_ms)}"


def _local_naive(at_ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(zone).replace(tzinfo=None)


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _instant(local: datetime, zone: ZoneInfo) -> int:
    """The instant a wall-clock time stands for under the rules in the module docstring."""
    first = local.replace(tzinfo=zone, fold=0)
    instant = _to_ms(first)
    if _local_naive(instant, zone) == local:
        return instant  # exists; fold=0 is the first of two occurrences of a repeated time
    # Skipped by a forward jump: fire when the gap ends. With fold=1 the time is read with the
    # offset after the jump, which lands before the jump; fold=0 lands after it. The jump is
    # the first second in between whose offset differs from the one before.
    lo = _to_ms(local.replace(tzinfo=zone, fold=1)) // 1000
    hi = instant // 1000
    before = _offset(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return hi * 1000


def _offset(at_s: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(at_s, UTC).astimezone(zone).utcoffset()
