"""Secrets: argon2id passwords, API keys, signed session tokens, invitation tokens.

Nothing secret is ever stored: passwords as argon2id hashes, API keys and invitation tokens as
HMAC-SHA256 under a key derived from the server secret. Each use derives its own key so a value
signed for one purpose means nothing for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import string
import sys
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import argon2
import jwt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aiki.iam import password_policy
from aiki.platform.domain.errors import RateLimited

_T = TypeVar("_T")

# argon2id at (at least) the OWASP minimum: 19 MiB of memory, 2 passes, 1 lane.
PASSWORD_TIME_COST = 2
PASSWORD_MEMORY_KIB = 19 * 1024
PASSWORD_PARALLELISM = 1

_ALPHABET = string.digits + string.ascii_letters
KEY_PREFIX = "aiki_"
_KEY_ID_LENGTH = 12
_KEY_SECRET_LENGTH = 32
_CHECKSUM_LENGTH = 6
_KEY_RE = re.compile(
    rf"^aiki_([0-9a-z]{{{_KEY_ID_LENGTH}}})_([0-9A-Za-z]{{{_KEY_SECRET_LENGTH}}})([0-9A-Za-z]{{{_CHECKSUM_LENGTH}}})$"
)
_SESSION_ALGORITHM = "HS256"


def _hasher(time_cost: int = PASSWORD_TIME_COST, memory_kib: int = PASSWORD_MEMORY_KIB) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=PASSWORD_PARALLELISM, type=argon2.Type.ID
    )


def default_hash_threads() -> int:
    """One argon2 computation per CPU but one, left to the event loop (at least one thread).

    Measured on 2 CPUs: 8 hashes on the event loop stalled it 143 ms at the median; in one pool
    thread the loop's median lag stayed at 3 ms (argon2-cffi releases the GIL while it hashes);
    with as many threads as CPUs the hashing competes with the loop for the CPU it runs on.
    """
    return max(1, (os.cpu_count() or 1) - 1)


# Niceness of the argon2 threads (Linux schedules threads separately; elsewhere a no-op). Measured
# with bench signup_flood (server, flood and tenant in separate processes, 2 shared cores): during a
# flood from many addresses the tenant's p50 went to 2.1x and 3.0x its quiet p50 with the threads
# at 0, 1.2x, 0.3x and 2.5x at 10; with every throttle off, 5.7x at 0 and 2.4x at 10.
HASH_THREAD_NICENESS = 10


def _lower_priority() -> None:
    """Run this pool thread at a lower CPU priority than the event loop's thread.

    The loop thread then wins whenever both want the CPU, so hashing only uses time the loop
    leaves idle. ``setpriority`` on a thread id works on Linux only (elsewhere it would
    lower the whole process, loop included, so it is skipped there).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


# Hashes allowed to wait for a thread, per thread, before new ones are refused (``RateLimited``).
DEFAULT_HASH_QUEUE_PER_THREAD = 8
# What a refused caller is told to wait: a queue this short drains in well under a second.
BUSY_RETRY_AFTER_S = 1


class Passwords:
    """argon2id hashing with rehash-on-parameter-change, off the event loop.

    An argon2id computation takes tens of milliseconds of CPU. Run on the event loop, each one
    stalls every other request of the process (an anonymous flood of sign-ups made another tenant's
    p50 thirty times slower). So :meth:`hash`, :meth:`verify` and :meth:`burn` run in a dedicated
    pool of ``threads`` threads (argon2-cffi releases the GIL while it hashes) and at most
    ``threads * (1 + queue_per_thread)`` computations are admitted at once: past that the caller
    gets :class:`RateLimited` (429 with ``Retry-After``) instead of a queue growing without bound.
    """

    def __init__(
        self,
        time_cost: int = PASSWORD_TIME_COST,
        memory_kib: int = PASSWORD_MEMORY_KIB,
        *,
        threads: int | None = None,
        queue_per_thread: int = DEFAULT_HASH_QUEUE_PER_THREAD,
    ) -> None:
        if time_cost < PASSWORD_TIME_COST or memory_kib < PASSWORD_MEMORY_KIB:
            raise ValueError("argon2id parameters below the minimum (t=2, m=19 MiB)")
        self._hasher = _hasher(time_cost, memory_kib)
        self.threads = threads or default_hash_threads()
        if self.threads < 1 or queue_per_thread < 0:
            raise ValueError("argon2 threads must be at least 1 and the queue not negative")
        self.max_admitted = self.threads * (1 + queue_per_thread)
        self._pool: ThreadPoolExecutor | None = None
        self._admitted = 0  # touched only on event-loop threads, between awaits: no lock needed
        self._dummy: str | None = None
        self.verifications = 0  # argon2 verifications run (real and dummy); tests compare the work done

    @staticmethod
    def check_policy(password: str, *, email: str | None = None) -> None:
        """Refuse a new password the policy rejects (``aiki.iam.password_policy``), naming ``$.password``."""
        password_policy.check_policy(password, email=email)

    async def hash(self, password: str) -> str:
        return await self._run(self._hash_sync, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        if stored is None or len(password) > password_policy.MAX_LENGTH:
            await self.burn(password)  # no answer comes faster than a real check
            return False
        return await self._run(self._verify_sync, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    async def burn(self, password: str) -> None:
        """Spend the time of one verification, so unknown emails answer as slowly as wrong passwords.

        The dummy hash has this hasher's parameters, so the work is the same as a real check's.
        """
        await self._run(self._burn_sync, password[: password_policy.MAX_LENGTH])

    def close(self) -> None:
        """Stop the pool's threads (they also stop with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def refuse_if_busy(self) -> None:
        """Raise :class:`RateLimited` now if a hash would be refused: callers check this before the
        database work that precedes their hash, so a flood the pool refuses anyway costs the event
        loop no queries (botnet flood, bench signup_flood: the tenant's p50 from 2.5x to 0.8-1.5x its
        quiet p50 in five runs of six, 2.3x in one)."""
        if self._admitted >= self.max_admitted:
            raise RateLimited(
                "the server is busy checking passwords; retry in a moment", retry_after_s=BUSY_RETRY_AFTER_S
            )

    async def _run(self, func: Callable[..., _T], *args: str) -> _T:
        self.refuse_if_busy()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="aiki-argon2", initializer=_lower_priority
            )
        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        finally:
            self._admitted -= 1

    def _hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify_sync(self, stored: str, password: str) -> bool:
        self.verifications += 1
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _burn_sync(self, password: str) -> None:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._verify_sync(self._dummy, password)


def _random(n: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    token: str


def new_api_key() -> ParsedKey:
    """A fresh key ``aiki_<id>_<secret><checksum>``; the caller shows ``token`` once and stores its HMAC."""
    key_id = _random(_KEY_ID_LENGTH, string.digits + string.ascii_lowercase)
    body = f"{KEY_PREFIX}{key_id}_{_random(_KEY_SECRET_LENGTH)}"
    return ParsedKey(key_id=key_id, token=body + _checksum(body))


def parse_api_key(token: str) -> ParsedKey | None:
    """The key's id if ``token`` is well formed and its checksum holds; ``None`` otherwise (no lookup needed)."""
    match = _KEY_RE.match(token)
    if match is None:
        return None
    body = token[:-_CHECKSUM_LENGTH]
    if not hmac.compare_digest(_checksum(body), match.group(3)):
        return None
    return ParsedKey(key_id=match.group(1), token=token)


def key_prefix(key_id: str) -> str:
    """What lists show of a key: enough to recognise it, nothing to use it."""
    return f"{KEY_PREFIX}{key_id}_"


class _DerivedKeys:
    """The per-purpose keys of one server secret."""

    __slots__ = ("api_keys", "email_tokens", "invitations", "oidc_browsers", "sessions")

    def __init__(self, secret_key: str) -> None:
        master = secret_key.encode()
        self.api_keys = _derive(master, b"aiki api keys")
        self.invitations = _derive(master, b"aiki invitations")
        self.sessions = _derive(master, b"aiki sessions")
        self.oidc_browsers = _derive(master, b"aiki oidc browsers")
        self.email_tokens = _derive(master, b"aiki email tokens")


def _derive(master: bytes, purpose: bytes) -> bytes:
    return hmac.new(master, purpose, hashlib.sha256).digest()


def _mac(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


class Secrets:
    """Keyed operations under the server secret, and under the previous one while it is rotated.

    Everything new (stored hashes, signed cookies) uses the current secret; the previous one
    (``AIKI_SECRET_KEY_PREVIOUS``) only verifies what was made before the rotation, so nothing a
    user holds stops working the moment the secret changes.
    """

    def __init__(self, secret_key: str, previous_key: str | None = None) -> None:
        self._current = _DerivedKeys(secret_key)
        self._previous = _DerivedKeys(previous_key) if previous_key else None

    @property
    def _all(self) -> tuple[_DerivedKeys, ...]:
        return (self._current,) if self._previous is None else (self._current, self._previous)

    def api_key_hash(self, token: str) -> str:
        """What ``api_keys.key_hash`` keeps of a new key (under the current secret)."""
        return _mac(self._current.api_keys, token)

    def api_key_hash_previous(self, token: str) -> str | None:
        """The key's hash under the previous secret, if one is set: what a key made before the rotation stored."""
        return None if self._previous is None else _mac(self._previous.api_keys, token)

    def invitation_hash(self, token: str) -> str:
        """What the ``invitations`` table keeps of a new invitation token."""
        return _mac(self._current.invitations, token)

    def invitation_hashes(self, token: str) -> tuple[str, ...]:
        """Every hash an invitation made with ``token`` may be stored under (current secret first)."""
        return tuple(_mac(keys.invitations, token) for keys in self._all)

    def oidc_browser_hash(self, token: str) -> str:
        """What the ``oidc_logins`` table keeps of a browser's pre-login cookie."""
        return _mac(self._current.oidc_browsers, token)

    def oidc_browser_hashes(self, token: str) -> tuple[str, ...]:
        """Every hash a pre-login cookie's logins may be stored under (current secret first)."""
        return tuple(_mac(keys.oidc_browsers, token) for keys in self._all)

    def email_token_hash(self, token: str) -> str:
        """What the ``email_tokens`` table keeps of a mailed link's token (verification, password reset)."""
        # Current secret only: a link mailed before a rotation stops working (it can be sent again).
        return _mac(self._current.email_tokens, token)

    @staticmethod
    def new_invitation_token() -> str:
        return secrets.token_urlsafe(32)

    def sign_session(self, session_id: str, issued_s: int, expires_s: int) -> str:
        claims = {"sid": session_id, "iat": issued_s, "exp": expires_s, "typ": "aiki-session"}
        return jwt.encode(claims, self._current.sessions, algorithm=_SESSION_ALGORITHM)

    def session_id(self, token: str) -> str | None:
        """The session a cookie names, if its signature holds under the current or previous secret.

        Times are checked against the session row (the server clock), not the token: replicas whose
        clocks differ by a second must not refuse each other's fresh cookies.
        """
        for keys in self._all:
            try:
                claims = jwt.decode(
                    token,
                    keys.sessions,
                    algorithms=[_SESSION_ALGORITHM],
                    options={"verify_exp": False, "verify_iat": False, "require": ["sid", "exp", "typ"]},
                )
            except jwt.PyJWTError:
                continue
            sid = claims.get("sid")
            return sid if isinstance(sid, str) and claims.get("typ") == "aiki-session" else None
        return None
