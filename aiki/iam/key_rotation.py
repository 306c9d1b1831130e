"""API keys across a rotation of the server secret.

A key is stored as its HMAC under the server secret and found by its id, so a presented key is
compared with the stored hash under the current secret and then under the previous one
(``AIKI_SECRET_KEY_PREVIOUS``). A key that matched under the previous secret is stored again under
the current one: once every key in use has been seen, the previous secret can go.
"""

from __future__ import annotations

import hmac

from aiki.iam.context import Iam
from aiki.iam.repos import ApiKeyDirectory


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def verified_key_hash(iam: Iam, key_id: str, token: str, stored_hash: str) -> str | None:
    """The hash key ``key_id`` is stored under once ``token`` is checked against ``stored_hash``.

    ``stored_hash`` itself when it matched under the current secret; the current secret's hash,
    newly stored, when it matched under the previous secret; None when ``token`` is not the key.
    """
    current = iam.secrets.api_key_hash(token)
    if _same(current, stored_hash):
        return stored_hash
    previous = iam.secrets.api_key_hash_previous(token)
    if previous is None or not _same(previous, stored_hash):
        return None
    async with iam.db.transaction() as conn:
        await ApiKeyDirectory(conn).rehash(key_id, previous, current)
    return current
