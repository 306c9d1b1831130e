"""The verified-key cache: TTL on the IAM clock, bounded size, and invalidation that a racing lookup
cannot undo (the fence)."""

from __future__ import annotations

from aiki.iam import key_cache
from aiki.iam.key_cache import CachedKey, KeyCache


def _key(key_id: str, namespace_id: str = "ns", cached_at: int = 0) -> CachedKey:
    return CachedKey(
        id=key_id,
        role="worker",
        namespace_id=namespace_id,
        organization_id="org",
        expires_at=None,
        key_hash=f"hash-of-{key_id}",
        last_used_at=None,
        cached_at=cached_at,
    )


def test_entries_live_for_the_ttl_on_the_iam_clock() -> None:
    cache = KeyCache(ttl_ms=5_000)
    cache.put(_key("a", cached_at=1_000))
    assert cache.get("a", 5_999) is not None
    assert cache.get("a", 6_000) is None
    assert len(cache) == 0  # a stale entry is dropped, not kept


def test_a_clock_moved_back_makes_an_entry_stale() -> None:
    cache = KeyCache(ttl_ms=5_000)
    cache.put(_key("a", cached_at=1_000))
    assert cache.get("a", 999) is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(ttl_ms=0)
    cache.put(_key("a"))
    assert len(cache) == 0
    assert cache.get("a", 0) is None


def test_the_oldest_entries_go_beyond_the_bound() -> None:
    cache = KeyCache(ttl_ms=5_000, max_entries=3)
    for key_id in "abcd":
        cache.put(_key(key_id))
    assert len(cache) == 3
    assert cache.get("a", 0) is None
    assert [k for k in "bcd" if cache.get(k, 0) is not None] == ["b", "c", "d"]


def test_a_forgotten_key_is_not_cached_again_by_a_lookup_that_raced_the_revocation() -> None:
    cache = KeyCache(ttl_ms=5_000)
    cache.put(_key("a"))
    cache.put(_key("b"))
    key_cache.forget_key("a")  # module level: what the revoking SQL calls
    assert cache.get("a", 0) is None
    cache.put(_key("a"))  # a lookup that read the row before the revocation committed
    assert cache.get("a", 0) is None
    assert cache.get("b", 0) is not None


def test_forgetting_a_namespace_drops_and_fences_its_keys_in_every_cache() -> None:
    first, second = KeyCache(ttl_ms=5_000), KeyCache(ttl_ms=5_000)
    for cache in (first, second):
        cache.put(_key("a", "gone"))
        cache.put(_key("b", "kept"))
    key_cache.forget_namespace("gone")
    for cache in (first, second):
        assert cache.get("a", 0) is None
        assert cache.get("b", 0) is not None
        cache.put(_key("c", "gone"))
        assert cache.get("c", 0) is None
