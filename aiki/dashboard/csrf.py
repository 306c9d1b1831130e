"""CSRF tokens of the dashboard: a synchronizer token bound to the session.

The token is an HMAC of the session id under a key derived from the server secret, so it needs no
storage, changes when the session changes (login rotates sessions), and a token taken from another
session is refused. Litestar's ``CSRFConfig`` was considered: its double-submit cookie is not tied
to the session, and it would put a second cookie on API clients too.

Every unsafe dashboard request must carry the token, in the ``X-CSRF-Token`` header (HTMX sends it
from ``hx-headers``) or the ``_csrf`` form field (plain forms), and must not come from a foreign
``Origin``. Pure functions; the guard that applies them lives in ``aiki.dashboard.web``.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "x-csrf-token"
FIELD = "_csrf"
_PURPOSE = b"aiki dashboard csrf"


def _key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _PURPOSE, hashlib.sha256).digest()


def token_for(secret_key: str, session_id: str) -> str:
    """The CSRF token of one session."""
    return hmac.new(_key(secret_key), session_id.encode(), hashlib.sha256).hexdigest()


def token_matches(secret_key: str, session_id: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the token of ``session_id`` (constant-time)."""
    if not session_id or not presented:
        return False
    return hmac.compare_digest(token_for(secret_key, session_id).encode(), presented.encode())


def same_origin(expected: str, origin: str | None, referer: str | None) -> bool:
    """Whether an unsafe request comes from our own pages.

    Browsers send ``Origin`` on every POST; when a privacy setting drops it, ``Referer`` decides.
    A request with neither is refused: a browser always sends one of them on a form post.
    """
    if origin and origin != "null":
        return origin.rstrip("/").lower() == expected
    if referer:
        lowered = referer.lower()
        return lowered == expected or lowered.startswith(expected + "/")
    return False
