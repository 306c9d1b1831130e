"""A short-lived, in-process cache of verified API keys, so a request with a key reads no row.

Without it every request read the key's row. An entry holds the row's authorization facts (never
the token: only its stored HMAC) for ``IamConfig.api_key_cache_ttl_s``. A hit is still checked in
full by the caller: the presented token's HMAC against the cached one (constant time) and the
expiry against the clock. Only successful lookups are cached, so a failure never sticks.

Invalidation is immediate in this process: the SQL that revokes keys or deletes namespaces
(``aiki.iam.repos``) calls :func:`forget_key` / :func:`forget_namespace`, which reach every live
cache. It runs inside the changing transaction, before its commit, so the id is also *fenced* for
a while: a lookup that raced the change cannot put the old row back. Other server processes keep
serving a changed key until their entry's TTL passes. (There is no organization deletion; one
must forget each of its namespaces, since the cascade deletes keys without passing through here.)
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 10_000
# How long an invalidated key or namespace is not cached again: far longer than the changing
# transaction takes to commit or a lookup that raced it takes to finish. Lookups still work.
FENCE_S = 10.0

_LIVE: weakref.WeakSet[KeyCache] = weakref.WeakSet()


@dataclass(slots=True)
class CachedKey:
    """What authenticating a key needs from its row; ``last_used_at`` is updated by the touch."""

    id: str
    role: str
    namespace_id: str
    organization_id: str
    expires_at: int | None
    key_hash: str
    last_used_at: int | None
    cached_at: int

    @classmethod
    def of(cls, row: Mapping[str, Any], now: int) -> CachedKey:
        return cls(
            id=row["id"],
            role=row["role"],
            namespace_id=row["namespace_id"],
            organization_id=row["organization_id"],
            expires_at=row["expires_at"],
            key_hash=row["key_hash"],
            last_used_at=row["last_used_at"],
            cached_at=now,
        )


class KeyCache:
    """Key id -> :class:`CachedKey`, oldest dropped beyond ``max_entries``. ``ttl_ms`` 0 disables.

    Times passed in are the IAM clock's (``Iam.now()``), so tests move TTLs with it; fences use the
    monotonic clock because they bound real transaction durations.
    """

    def __init__(self, ttl_ms: int, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedKey] = OrderedDict()
        self._fences: dict[str, float] = {}  # key or namespace id -> monotonic deadline
        _LIVE.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str, now: int) -> CachedKey | None:
        """The fresh entry of ``key_id``; a stale one is dropped (a clock moved back counts as stale)."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if not 0 <= now - entry.cached_at < self.ttl_ms:
            del self._entries[key_id]
            return None
        return entry

    def put(self, entry: CachedKey) -> None:
        if self.ttl_ms <= 0 or self._fenced(entry.id) or self._fenced(entry.namespace_id):
            return
        self._entries[entry.id] = entry
        self._entries.move_to_end(entry.id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_key(self, key_id: str) -> None:
        self._entries.pop(key_id, None)
        self._fence(key_id)

    def forget_namespace(self, namespace_id: str) -> None:
        for key_id in [k for k, e in self._entries.items() if e.namespace_id == namespace_id]:
            del self._entries[key_id]
        self._fence(namespace_id)

    def _fence(self, target: str) -> None:
        now = time.monotonic()
        self._fences = {t: until for t, until in self._fences.items() if until > now}
        self._fences[target] = now + FENCE_S

    def _fenced(self, target: str) -> bool:
        until = self._fences.get(target)
        return until is not None and until > time.monotonic()


def forget_key(key_id: str) -> None:
    """Drop ``key_id`` from every cache in this process (it was revoked or changed)."""
    for cache in list(_LIVE):
        cache.forget_key(key_id)


def forget_namespace(namespace_id: str) -> None:
    """Drop every key of ``namespace_id`` from every cache in this process (deleted, or keys revoked by name)."""
    for cache in list(_LIVE):
        cache.forget_namespace(namespace_id)
