"""Slowing password guessing without letting anyone lock an owner out.

A per-account lockout is a weapon: ten wrong passwords from anywhere locked the account for
everyone, its owner included. Instead failures are counted

- per (account, client address): after ``login_free_failures`` of them, the next attempt on that
  account *from that address* is allowed only 2, 4, 8... seconds after the latest failure (capped at
  ``login_max_delay_s``), answered 429 with ``Retry-After`` before then, the right password
  included. The owner at their usual address has their own counter and gets in at once. A login
  that succeeds from the address clears its counter; one day without failures forgets it;
- per client address, across accounts (credential stuffing): past ``login_max_per_ip`` failures
  in ``login_window_s``, the address may not try any account until the window ends.

Counters live in the shared ``rate_limits`` table (for the pair counter, ``window_start`` holds the
latest failure), so every replica sees them. The keys depend only on the address typed, never on
whether an account has it, so a guess at an unknown email does the same work as a wrong password.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import audit
from aiki.iam.context import Iam
from aiki.iam.repos import RateLimitRepository
from aiki.platform.domain.errors import RateLimited

# A (account, address) failure count with no new failure for this long starts again.
FAILURE_MEMORY_MS = 24 * 3600 * 1000
# 2**30 s is already beyond any sensible cap; bounds the exponent (and the integer) we compute.
_MAX_EXPONENT = 30


def _pair_key(address: str, ip: str | None) -> str:
    return f"login:fail:{ip or '-'}:{address}"


def _ip_key(ip: str | None) -> str:
    return f"login:fail-ip:{ip or '-'}"


def delay_s(failures: int, free: int, cap_s: int) -> int:
    """Seconds to wait after the latest of ``failures`` failures: 0 while free, then 2, 4, 8... up to ``cap_s``."""
    extra = failures - free
    if extra <= 0:
        return 0
    return min(1 << min(extra, _MAX_EXPONENT), cap_s)


async def check(iam: Iam, address: str, ip: str | None) -> None:
    """Raise :class:`RateLimited` when ``ip`` must wait before trying ``address`` again (or any account)."""
    config = iam.config
    now = iam.now()
    pair, per_ip = _pair_key(address, ip), _ip_key(ip)
    async with iam.db.engine.connect() as conn:
        counts = await RateLimitRepository(conn).read([pair, per_ip])
    allowed_at = 0
    if pair in counts:
        failures, latest = counts[pair]
        if now - latest < FAILURE_MEMORY_MS:
            allowed_at = latest + 1000 * delay_s(failures, config.login_free_failures, config.login_max_delay_s)
    if per_ip in counts:
        failures, start = counts[per_ip]
        window_end = start + config.login_window_s * 1000
        if now < window_end and failures >= config.login_max_per_ip:
            allowed_at = max(allowed_at, window_end)
    if now >= allowed_at:
        return
    await audit.record(
        iam, None, "login", "rate_limited", actor_label=address, target_type="user", ip=ip, detail={"email": address}
    )
    raise RateLimited(
        "too many failed logins from this address; retry later", retry_after_s=(allowed_at - now + 999) // 1000
    )


async def record_failure(iam: Iam, conn: AsyncConnection, address: str, ip: str | None) -> None:
    """Count a wrong password (or unknown email) for ``address`` from ``ip``, inside ``conn``'s transaction."""
    now = iam.now()
    counters = RateLimitRepository(conn)
    await counters.strike(_pair_key(address, ip), now, FAILURE_MEMORY_MS)
    await counters.hit(_ip_key(ip), now, iam.config.login_window_s * 1000)


async def record_success(conn: AsyncConnection, address: str, ip: str | None) -> None:
    """Forget the failures of ``address`` from ``ip`` (the per-address count across accounts stays)."""
    await RateLimitRepository(conn).clear([_pair_key(address, ip)])
