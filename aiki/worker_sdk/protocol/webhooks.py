"""Standard Webhooks signatures (https://www.standardwebhooks.com): the server signs each push
delivery, the endpoint verifies it.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
HMAC-SHA256 under the secret's key, base64-encoded, sent as ``v1,<signature>``. During a secret
rotation the server sends one signature per valid secret, space-separated, so an endpoint that
still holds the old secret and one that holds the new both verify. Secrets are written
``whsec_<base64 of the key>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60
"""A delivery whose timestamp is further than this from the receiver's clock is refused."""

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class WebhookVerificationError(Exception):
    """A delivery failed verification; the message says why (never echoes a secret)."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret.

    Raises:
        ValueError: the secret is not ``whsec_`` followed by base64.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError("a signing secret's key must be at least 16 bytes")
    return key


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` under ``secret``."""
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets: Sequence[str], msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery signed under each of ``secrets`` (current first)."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp_s),
        SIGNATURE_HEADER: " ".join(sign(s, msg_id, timestamp_s, body) for s in secrets),
    }


def verify(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now_s: int, tolerance_s: int = TOLERANCE_S
) -> tuple[str, int]:
    """Check a delivery's signature and age; its ``(webhook-id, timestamp)`` when it holds.

    ``headers`` are looked up by lower-case name. Every signature in the header is compared, in
    constant time, against every secret's.

    Raises:
        WebhookVerificationError: a header is missing or malformed, the timestamp is outside the
            tolerance, or no signature matches.
    """
    msg_id = headers.get(ID_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not msg_id or not stamp or not given:
        needed = f"{ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
        raise WebhookVerificationError(f"missing header: {needed} are required")
    try:
        timestamp_s = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer") from None
    if abs(now_s - timestamp_s) > tolerance_s:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is more than {tolerance_s} s from now")
    offered = [part[3:] for part in given.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp_s, body)[3:]
        # No early exit on a match inside the loop over offered signatures: compare all.
        if any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in offered):
            return msg_id, timestamp_s
    raise WebhookVerificationError("no signature matches")
