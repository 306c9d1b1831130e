"""Secrets: argon2id passwords, API keys, signed session tokens, invitation tokens.

Nothing secret is ever stored: passwords as argon2id hashes, API keys and invitation tokens as
HMAC-SHA256 under a key derived from the server secret. Each use derives its own key so a value
signed for one purpose means nothing for another.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

import argon2
import jwt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aiki.platform.domain.errors import InputInvalid

# argon2id at (at least) the OWASP minimum: 19 MiB of memory, 2 passes, 1 lane.
PASSWORD_TIME_COST = 2
PASSWORD_MEMORY_KIB = 19 * 1024
PASSWORD_PARALLELISM = 1
MIN_PASSWORD_LENGTH = 8
# Bounds the work one request can ask of the hasher; longer passwords are refused, never cut.
MAX_PASSWORD_LENGTH = 1024

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


class Passwords:
    """argon2id hashing with rehash-on-parameter-change."""

    def __init__(self, time_cost: int = PASSWORD_TIME_COST, memory_kib: int = PASSWORD_MEMORY_KIB) -> None:
        if time_cost < PASSWORD_TIME_COST or memory_kib < PASSWORD_MEMORY_KIB:
            raise ValueError("argon2id parameters below the minimum (t=2, m=19 MiB)")
        self._hasher = _hasher(time_cost, memory_kib)

    @staticmethod
    def check_policy(password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InputInvalid(f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="$.password")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InputInvalid(f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="$.password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        if stored is None or len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    def burn(self, password: str) -> None:
        """Spend the time of one verification, so unknown emails answer as slowly as wrong passwords."""
        self.verify(_dummy_hash(), password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


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


class Secrets:
    """Keyed operations under the server secret."""

    def __init__(self, secret_key: str) -> None:
        master = secret_key.encode()
        self._api_keys = self._derive(master, b"aiki api keys")
        self._invitations = self._derive(master, b"aiki invitations")
        self._sessions = self._derive(master, b"aiki sessions")
        self._oidc_browsers = self._derive(master, b"aiki oidc browsers")
        self._email_tokens = self._derive(master, b"aiki email tokens")

    @staticmethod
    def _derive(master: bytes, purpose: bytes) -> bytes:
        return hmac.new(master, purpose, hashlib.sha256).digest()

    def api_key_hash(self, token: str) -> str:
        return hmac.new(self._api_keys, token.encode(), hashlib.sha256).hexdigest()

    def invitation_hash(self, token: str) -> str:
        return hmac.new(self._invitations, token.encode(), hashlib.sha256).hexdigest()

    def oidc_browser_hash(self, token: str) -> str:
        """What the ``oidc_logins`` table keeps of a browser's pre-login cookie."""
        return hmac.new(self._oidc_browsers, token.encode(), hashlib.sha256).hexdigest()

    def email_token_hash(self, token: str) -> str:
        """What the ``email_tokens`` table keeps of a mailed link's token (verification, password reset)."""
        return hmac.new(self._email_tokens, token.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def new_invitation_token() -> str:
        return secrets.token_urlsafe(32)

    def sign_session(self, session_id: str, issued_s: int, expires_s: int) -> str:
        claims = {"sid": session_id, "iat": issued_s, "exp": expires_s, "typ": "aiki-session"}
        return jwt.encode(claims, self._sessions, algorithm=_SESSION_ALGORITHM)

    def session_id(self, token: str) -> str | None:
        """The session a cookie names, if its signature holds.

        Times are checked against the session row (the server clock), not the token: replicas whose
        clocks differ by a second must not refuse each other's fresh cookies.
        """
        try:
            claims = jwt.decode(
                token,
                self._sessions,
                algorithms=[_SESSION_ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "require": ["sid", "exp", "typ"]},
            )
        except jwt.PyJWTError:
            return None
        sid = claims.get("sid")
        return sid if isinstance(sid, str) and claims.get("typ") == "aiki-session" else None
