"""API-key authentication off the database, on both databases: the verified-key cache still checks
every secret and expiry, forgets revoked keys at once, and the per-key limit still answers 429."""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from aiki.iam import accounts, crypto
from aiki.iam.crypto import parse_api_key
from aiki.iam.repos import ApiKeyDirectory
from aiki.platform.domain.errors import Unauthenticated
from tests.iam_support import API, IamHarness


async def _started(db_url: str, **config: Any) -> IamHarness:
    harness = IamHarness("postgres" if db_url.startswith("postgresql") else "sqlite", db_url, **config)
    await harness.start()
    return harness


@pytest.fixture
async def long_cache(db_url: str) -> AsyncIterator[IamHarness]:
    """Keys cached for an hour: a request after the first one is served from the cache."""
    harness = await _started(db_url, api_key_cache_ttl_s=3600)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key ids read from the database (``ApiKeyDirectory.get``), in order."""
    seen: list[str] = []
    real_get = ApiKeyDirectory.get

    async def counting_get(self: ApiKeyDirectory, key_id: str) -> Any:
        seen.append(key_id)
        return await real_get(self, key_id)

    monkeypatch.setattr(ApiKeyDirectory, "get", counting_get)
    return seen


def _same_id_other_secret(key: str) -> str:
    """A well-formed key (checksum holds) with ``key``'s id and another secret."""
    key_id = key.split("_")[1]
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    body = f"aiki_{key_id}_{secret}"
    forged = body + crypto._checksum(body)
    assert parse_api_key(forged) is not None
    assert forged != key
    return forged


async def test_a_cached_key_with_a_wrong_secret_is_refused(long_cache: IamHarness, lookups: list[str]) -> None:
    alice = await long_cache.signup("alice@example.com")
    created = await long_cache.create_key(alice, "admin")
    key, key_id = created["key"], created["api_key"]["id"]
    assert (await long_cache.key_http(key).get(f"{API}/runs")).status_code == 200
    assert long_cache.iam.key_cache.get(key_id, long_cache.iam.now()) is not None
    forged = await long_cache.key_http(_same_id_other_secret(key)).get(f"{API}/runs")
    assert forged.status_code == 401
    assert "not valid" in forged.json()["detail"]
    # The refusal came from the cache, and did not spoil the entry for the real key.
    assert (await long_cache.key_http(key).get(f"{API}/runs")).status_code == 200
    assert lookups == [key_id]


async def test_a_revoked_key_is_refused_on_the_next_request_though_cached(
    long_cache: IamHarness, lookups: list[str]
) -> None:
    alice = await long_cache.signup("alice@example.com")
    created = await long_cache.create_key(alice, "worker")
    key_id = created["api_key"]["id"]
    http = long_cache.key_http(created["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    assert (await http.get(f"{API}/runs")).status_code == 200
    assert lookups == [key_id]  # the second request was served from the cache
    revoked = await alice.http.delete(f"{API}/namespaces/{alice.namespace_id}/api-keys/{key_id}")
    assert revoked.status_code == 200, revoked.text
    assert long_cache.iam.key_cache.get(key_id, long_cache.iam.now()) is None
    after = await http.get(f"{API}/runs")
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]


async def test_a_deleted_namespace_s_cached_key_is_refused_at_once(long_cache: IamHarness) -> None:
    owner = await long_cache.signup("owner@example.com")
    created = await owner.http.post(f"{API}/organizations/{owner.org_id}/namespaces", json={"name": "staging"})
    ns = created.json()["id"]
    made = await long_cache.create_key(owner, "admin", namespace_id=ns)
    http = long_cache.key_http(made["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    assert long_cache.iam.key_cache.get(made["api_key"]["id"], long_cache.iam.now()) is not None
    assert (await owner.http.delete(f"{API}/namespaces/{ns}")).status_code == 204
    assert (await http.get(f"{API}/runs")).status_code == 401


async def test_a_cached_key_is_refused_once_it_expires(long_cache: IamHarness, lookups: list[str]) -> None:
    alice = await long_cache.signup("alice@example.com")
    created = await long_cache.create_key(alice, "read", expires_at=long_cache.iam.now() + 60_000)
    http = long_cache.key_http(created["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    long_cache.advance(60_001)  # past the expiry, well within the cache's TTL
    after = await http.get(f"{API}/runs")
    assert after.status_code == 401
    assert "expired" in after.json()["detail"]
    assert lookups == [created["api_key"]["id"]]  # refused from the cached entry, not a fresh read


async def test_an_entry_is_read_again_after_its_ttl(iam_aiki: IamHarness, lookups: list[str]) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    created = await iam_aiki.create_key(alice, "read")
    http = iam_aiki.key_http(created["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    iam_aiki.advance(round(iam_aiki.iam.config.api_key_cache_ttl_s * 1000))
    assert (await http.get(f"{API}/runs")).status_code == 200
    assert len(lookups) == 2


async def test_a_zero_ttl_reads_the_row_on_every_request(db_url: str, lookups: list[str]) -> None:
    harness = await _started(db_url, api_key_cache_ttl_s=0)
    try:
        alice = await harness.signup("alice@example.com")
        http = harness.key_http((await harness.create_key(alice, "read"))["key"])
        for _ in range(3):
            assert (await http.get(f"{API}/runs")).status_code == 200
        assert len(lookups) == 3
        assert len(harness.iam.key_cache) == 0
    finally:
        await harness.close()


async def test_the_limit_answers_429_with_retry_after_then_lets_the_next_window_in(db_url: str) -> None:
    """A limit of 40 folds every 4 hits, not every request: the count is still exact in one process."""
    harness = await _started(db_url, api_requests_per_minute=40)
    frozen = harness.iam.now()
    harness.iam.clock = lambda: frozen + harness.offset_ms
    try:
        alice = await harness.signup("alice@example.com")
        created = await harness.create_key(alice, "read")
        http = harness.key_http(created["key"])
        statuses = [(await http.get(f"{API}/runs")).status_code for _ in range(41)]
        assert statuses == [200] * 40 + [429]
        limited = await http.get(f"{API}/runs")
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        query = sa.text("SELECT count FROM rate_limits WHERE key = :key")
        async with harness.server.db.engine.connect() as conn:
            stored = (await conn.execute(query, {"key": f"api:{created['api_key']['id']}"})).scalar_one()
        assert 40 <= stored <= 42  # the shared counter got (nearly) every hit, folded
        harness.advance(60_000)
        assert (await http.get(f"{API}/runs")).status_code == 200
    finally:
        await harness.close()


class _Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)


@pytest.fixture
def statements(iam_aiki: IamHarness) -> Iterator[_Statements]:
    """Every SQL statement the IAM's engine sends from now on."""
    counter = _Statements()
    engine = iam_aiki.iam.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        sa.event.remove(engine, "before_cursor_execute", counter)


async def test_the_steady_state_sends_no_statement_per_request(
    iam_aiki: IamHarness, statements: _Statements, lookups: list[str]
) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    key = (await iam_aiki.create_key(alice, "worker"))["key"]
    frozen = iam_aiki.iam.now()
    iam_aiki.iam.clock = lambda: frozen  # no TTL, fold or touch comes due while we count
    principal = await accounts.authenticate_key(iam_aiki.iam, key)  # the first one reads and writes
    assert lookups == [principal.id]
    statements.seen.clear()
    for _ in range(50):
        assert (await accounts.authenticate_key(iam_aiki.iam, key)).id == principal.id
    assert statements.seen == []
    assert lookups == [principal.id]
    with pytest.raises(Unauthenticated):
        await accounts.authenticate_key(iam_aiki.iam, _same_id_other_secret(key))
    assert statements.seen == []
