"""Attempts per action, per client address and in all, shared by every replica.

Sign-up, login, password reset and invitation acceptance are reachable before (or right after)
anyone proves who they are, and each costs an argon2 computation or a write. ``throttle`` counts
one attempt in the ``rate_limits`` table (fixed windows of ``throttle_window_s``; one upsert per
counter, in one short transaction) and raises :class:`RateLimited` (429 with ``Retry-After``)
past the per-address or the global limit of the action (``IamConfig.throttle_<action>_*``).

The per-address counter is checked first: an attempt it refuses does not count globally, so one
address alone cannot use up everyone's allowance. The global limit is the backstop against a
flood from many addresses; it refuses legitimate people too while the flood lasts, which is the
price of keeping the server up.
"""

from __future__ import annotations

import weakref
from typing import Literal, get_args

from aiki.iam.context import Iam
from aiki.iam.repos import RateLimitRepository
from aiki.platform.domain.errors import RateLimited

Action = Literal["signup", "login", "password_reset", "invitation_accept"]
ACTIONS: tuple[str, ...] = get_args(Action)

_WHAT = {
    "signup": "sign-ups",
    "login": "login attempts",
    "password_reset": "password reset requests",
    "invitation_accept": "invitation acceptances",
}


# Refusals this process already knows of, per server: counter key -> end of its window (ms). A
# window's count only grows, so a counter over its limit stays refused until its window ends; the
# flood's repeats are then refused without a database round trip, which is what a flood of
# refused requests still cost every other request of the process (a loopback flood of 32
# clients, bench signup_flood: the tenant's p99 went from 96 ms to 36 ms).
_refused: weakref.WeakKeyDictionary[Iam, dict[str, int]] = weakref.WeakKeyDictionary()
_REFUSED_KEPT = 10_000  # entries kept per server; expired ones are dropped past this


def _known_refusal(iam: Iam, key: str, now: int) -> int | None:
    until = _refused.get(iam, {}).get(key)
    return until if until is not None and now < until else None


def _remember_refusal(iam: Iam, key: str, until: int, now: int) -> None:
    known = _refused.setdefault(iam, {})
    if len(known) >= _REFUSED_KEPT:
        for stale in [k for k, end in known.items() if end <= now]:
            del known[stale]
        if len(known) >= _REFUSED_KEPT:  # a flood from that many addresses: forget, the table counts
            known.clear()
    known[key] = until


def limits(iam: Iam, action: Action) -> tuple[int, int]:
    """``(per address, global)`` attempts allowed per window; 0 is no limit."""
    config = iam.config
    per_ip: int = getattr(config, f"throttle_{action}_per_ip")
    overall: int = getattr(config, f"throttle_{action}_global")
    return per_ip, overall


async def throttle(iam: Iam, action: Action, ip: str | None) -> None:
    """Count one attempt at ``action`` from ``ip``; raise :class:`RateLimited` when over a limit."""
    if action not in _WHAT:
        raise ValueError(f"unknown throttled action {action!r}; one of {', '.join(ACTIONS)}")
    per_ip, overall = limits(iam, action)
    if not per_ip and not overall:
        return
    now = iam.now()
    window = iam.config.throttle_window_s * 1000
    ip_key, all_key = f"throttle:{action}:ip:{ip or '-'}", f"throttle:{action}:all"
    refused_until: int | None = None
    whose = ""
    if per_ip and (until := _known_refusal(iam, ip_key, now)) is not None:
        refused_until, whose = until, "from this address"
    elif overall and (until := _known_refusal(iam, all_key, now)) is not None:
        refused_until, whose = until, "on this server"
    else:
        async with iam.db.transaction() as conn:
            counters = RateLimitRepository(conn)
            if per_ip:
                count, start = await counters.hit(ip_key, now, window)
                if count > per_ip:
                    refused_until, whose = start + window, "from this address"
                    _remember_refusal(iam, ip_key, refused_until, now)
            if overall and refused_until is None:
                count, start = await counters.hit(all_key, now, window)
                if count > overall:
                    refused_until, whose = start + window, "on this server"
                    _remember_refusal(iam, all_key, refused_until, now)
    if refused_until is not None:
        raise RateLimited(
            f"too many {_WHAT[action]} {whose}; retry later", retry_after_s=max(1, (refused_until - now + 999) // 1000)
        )
