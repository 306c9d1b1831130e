"""Secrets the server must use again later (an endpoint's signing secret) kept encrypted at rest.

A signing secret cannot be stored as a hash like an API key: the server signs every delivery with
it. It is sealed with AES-256-GCM under a key derived from the server secret (``AIKI_SECRET_KEY``),
so a copy of the database alone does not reveal it. While the server secret is rotated, what was
sealed under the previous one still opens (and is sealed again under the new one on its next change).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PURPOSE = b"aiki endpoint secrets"
_VERSION = "v1:"


class SecretBoxError(Exception):
    """A sealed value could not be opened under any known server secret."""


class SecretBox:
    """Seals and opens short secrets under the server secret (and the previous one, to open)."""

    def __init__(self, secret_key: str, previous_key: str | None = None) -> None:
        self._current = AESGCM(_derive(secret_key))
        self._previous = AESGCM(_derive(previous_key)) if previous_key else None

    def seal(self, plain: str, *, context: str) -> str:
        """``plain`` encrypted; ``context`` (e.g. the endpoint id) is bound to it, so a sealed value
        copied to another row does not open there."""
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, plain.encode(), context.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> str:
        """The plain text of a value :meth:`seal` made with the same ``context``.

        Raises:
            SecretBoxError: it was sealed under another server secret, for another context, or altered.
        """
        if not sealed.startswith(_VERSION):
            raise SecretBoxError("not a sealed value")
        raw = base64.b64decode(sealed[len(_VERSION) :])
        nonce, body = raw[:12], raw[12:]
        for box in (self._current, self._previous):
            if box is None:
                continue
            try:
                return box.decrypt(nonce, body, context.encode()).decode()
            except InvalidTag:
                continue
        raise SecretBoxError("the value was sealed under another server secret, or altered")


def _derive(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _PURPOSE, hashlib.sha256).digest()
