"""Security properties of IAM, on both databases: nothing secret at rest or in logs, keys checked
before any lookup, sessions rotated at login and revoked server-side, rate limits, audit rows."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from aiki.iam import crypto
from aiki.iam.crypto import Passwords, new_api_key, parse_api_key
from aiki.iam.repos import ApiKeyDirectory
from aiki.iam.tables import metadata
from tests.iam_support import API, PASSWORD, IamHarness, Person

WF = {"workflow": "sec-wf", "version": "1.0.0"}


@pytest.fixture
async def strict_iam(db_url: str) -> AsyncIterator[IamHarness]:
    """IAM with tight limits: 3 free login failures per account and address, 5 requests per key per minute."""
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, login_free_failures=3, api_requests_per_minute=5).start()
    try:
        yield harness
    finally:
        await harness.close()


async def _dump_every_table(h: IamHarness) -> str:
    parts = []
    async with h.server.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(sa.select(table))).all()
            parts.append(f"{table.name}: {rows!r}")
    return "\n".join(parts)


async def _start_run(h: IamHarness, key: str) -> str:
    http = h.key_http(key)
    reg = await http.post(f"{API}/workers/register", json={"worker_id": "w", "host": "h", "versions": [WF]})
    assert reg.status_code == 200, reg.text
    started = await http.post(f"{API}/runs", json={**WF, "input": {}})
    assert started.status_code == 201, started.text
    run_id: str = started.json()["run"]["id"]
    return run_id


async def test_no_password_key_token_or_cookie_in_any_table_or_log(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    password = "unique-Password-4242-xyz"
    alice = await iam_aiki.signup("alice@example.com", password=password)
    secrets.append(password)
    secrets.append(alice.http.cookies["aiki_session"])
    for role in ("admin", "worker", "read"):
        key = (await iam_aiki.create_key(alice, role))["key"]
        secrets += [key, key.split("_")[2]]  # the whole key and its secret part
        assert (await iam_aiki.key_http(key).get(f"{API}/runs")).status_code == 200
    invited = await alice.http.post(f"{API}/organizations/{alice.org_id}/invitations", json={"email": "b@example.com"})
    secrets.append(invited.json()["token"])
    wrong = "wrong-Password-9999-abc"
    http = iam_aiki.new_http()
    assert (
        await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": wrong})
    ).status_code == 401
    secrets.append(wrong)
    session = await iam_aiki.login("alice@example.com", password)
    secrets.append(session.cookies["aiki_session"])
    assert (await iam_aiki.key_http("aiki_" + "x" * 12 + "_" + "y" * 38).get(f"{API}/runs")).status_code == 401

    dump = await _dump_every_table(iam_aiki)
    assert "argon2id" in dump  # the dump did read the users table
    logs = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    for secret in secrets:
        assert secret not in dump, "a secret is stored in clear"
        assert secret not in logs, "a secret reached the logs"


async def test_api_key_checksum_is_checked_before_any_lookup(
    iam_aiki: IamHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    key = (await iam_aiki.create_key(alice, "admin"))["key"]
    lookups: list[str] = []
    real_get = ApiKeyDirectory.get

    async def counting_get(self: ApiKeyDirectory, key_id: str) -> Any:
        lookups.append(key_id)
        return await real_get(self, key_id)

    monkeypatch.setattr(ApiKeyDirectory, "get", counting_get)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    # Change one character of the secret (never to itself, or the "tampered" key would be the key).
    body_tampered = key[:-7] + ("Z" if key[-7] != "Z" else "Y") + key[-6:]
    assert tampered != key
    assert body_tampered != key
    for bad in (tampered, body_tampered, "aiki_short", "not-a-key"):
        resp = await iam_aiki.key_http(bad).get(f"{API}/runs")
        assert resp.status_code == 401
        assert "malformed" in resp.json()["detail"]
    assert lookups == []
    unknown = new_api_key().token  # well formed, checksum holds: looked up, then refused
    assert (await iam_aiki.key_http(unknown).get(f"{API}/runs")).status_code == 401
    assert (await iam_aiki.key_http(key).get(f"{API}/runs")).status_code == 200
    assert len(lookups) == 2


def test_api_key_format() -> None:
    parsed = new_api_key()
    assert parsed.token.startswith(f"aiki_{parsed.key_id}_")
    assert len(parsed.token) == len("aiki_") + 12 + 1 + 32 + 6
    assert parse_api_key(parsed.token) == parsed
    assert parse_api_key(parsed.token + "x") is None
    assert parse_api_key(parsed.token.replace("aiki_", "aiki-", 1)) is None


async def test_password_hashes_are_argon2id_at_least_19_mib_and_2_passes() -> None:
    stored = await Passwords().hash("a password!")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    with pytest.raises(ValueError, match="minimum"):
        Passwords(time_cost=1)
    with pytest.raises(ValueError, match="minimum"):
        Passwords(memory_kib=8 * 1024)


async def test_password_is_rehashed_when_parameters_change(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("alice@example.com")
    iam_aiki.iam.passwords = Passwords(time_cost=3)
    await iam_aiki.login("alice@example.com")
    async with iam_aiki.server.db.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT password_hash FROM users"))).scalar_one()
    assert ",t=3," in stored
    await iam_aiki.login("alice@example.com")  # the new hash verifies


async def test_login_rotates_the_session_and_revokes_the_one_presented(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("alice@example.com")
    http = await iam_aiki.login("alice@example.com")
    before = http.cookies["aiki_session"]
    resp = await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert resp.status_code == 200
    after = http.cookies["aiki_session"]
    assert after != before
    stale = iam_aiki.new_http()
    stale.cookies.set("aiki_session", before)
    assert (await stale.get(f"{API}/auth/me")).status_code == 401
    assert (await http.get(f"{API}/auth/me")).status_code == 200


async def test_logout_revokes_server_side(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    cookie = alice.http.cookies["aiki_session"]
    assert (await alice.http.post(f"{API}/auth/logout")).status_code == 204
    replay = iam_aiki.new_http()
    replay.cookies.set("aiki_session", cookie)  # a copy of the cookie kept by an attacker
    resp = await replay.get(f"{API}/auth/me")
    assert resp.status_code == 401
    async with iam_aiki.server.db.engine.connect() as conn:
        revoked = (await conn.execute(sa.text("SELECT revoked_at FROM sessions"))).scalar_one()
    assert revoked is not None


async def test_idle_and_absolute_expiry(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    config = iam_aiki.iam.config
    iam_aiki.advance(config.session_idle_s * 1000 + 1000)
    assert (await alice.http.get(f"{API}/auth/me")).status_code == 401
    # Kept busy, a session still ends at its absolute expiry.
    http = await iam_aiki.login("alice@example.com")
    step = config.session_idle_s * 1000 // 2
    elapsed = 0
    while elapsed + step < config.session_absolute_s * 1000:
        iam_aiki.advance(step)
        elapsed += step
        assert (await http.get(f"{API}/auth/me")).status_code == 200
    iam_aiki.advance(config.session_absolute_s * 1000 - elapsed)
    assert (await http.get(f"{API}/auth/me")).status_code == 401


async def test_session_cookie_attributes(iam_aiki: IamHarness) -> None:
    harness = IamHarness(iam_aiki.db, iam_aiki.url, secure_cookies=True)
    try:
        http = harness.new_http()
        resp = await http.post(f"{API}/auth/signup", json={"email": "alice@example.com", "password": PASSWORD})
        assert resp.status_code == 202
        assert "set-cookie" not in resp.headers  # no session before the address is verified
        token = harness.last_token("alice@example.com", "/ui/verify-email")
        resp = await http.post(f"{API}/auth/verify-email", json={"token": token})
        assert resp.status_code == 200, resp.text
        cookie = resp.headers["set-cookie"]
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes
        assert "aiki_session" not in resp.text  # the body never carries the cookie value
    finally:
        await harness.close()


async def test_login_slows_down_then_the_right_user_gets_in_after_the_delay(strict_iam: IamHarness) -> None:
    await strict_iam.signup("alice@example.com")
    await strict_iam.signup("bob@example.com")
    http = strict_iam.new_http()
    for _ in range(4):  # 3 free failures, then one that starts the delay
        resp = await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": "guess-guess-1"})
        assert resp.status_code == 401
    limited = await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) == 2
    # Another account is not slowed down by attempts on alice.
    assert (
        await http.post(f"{API}/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    ).status_code == 200
    strict_iam.advance(2_000)
    ok = await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert ok.status_code == 200, ok.text


async def test_api_rate_limit_per_key(strict_iam: IamHarness) -> None:
    alice = await strict_iam.signup("alice@example.com")
    key_a = (await strict_iam.create_key(alice, "read"))["key"]
    key_b = (await strict_iam.create_key(alice, "read"))["key"]
    http = strict_iam.key_http(key_a)
    statuses = [(await http.get(f"{API}/runs")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    limited = await http.get(f"{API}/runs")
    assert int(limited.headers["retry-after"]) >= 1
    assert (await strict_iam.key_http(key_b).get(f"{API}/runs")).status_code == 200
    strict_iam.advance(61_000)
    assert (await http.get(f"{API}/runs")).status_code == 200


async def test_keys_cannot_manage_keys_and_workers_cannot_cancel(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    admin_key = (await iam_aiki.create_key(alice, "admin"))["key"]
    worker_key = (await iam_aiki.create_key(alice, "worker"))["key"]
    run_id = await _start_run(iam_aiki, admin_key)
    for key in (admin_key, worker_key):
        http = iam_aiki.key_http(key)
        made = await http.post(f"{API}/namespaces/{alice.namespace_id}/api-keys", json={"name": "x", "role": "read"})
        assert made.status_code == 403, made.text
        assert (await http.get(f"{API}/namespaces/{alice.namespace_id}/api-keys")).status_code == 403
    cancel = await iam_aiki.key_http(worker_key).post(f"{API}/runs/{run_id}/cancel", json={})
    assert cancel.status_code == 403
    claim = await iam_aiki.key_http(worker_key).post(
        f"{API}/workers/claim", json={"worker_id": "w", "versions": [[WF["workflow"], WF["version"]]], "wait_ms": 0}
    )
    assert claim.status_code == 200, claim.text


async def test_cross_origin_session_writes_are_refused(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    evil = await alice.http.post(f"{API}/organizations", json={"name": "x"}, headers={"origin": "https://evil.example"})
    assert evil.status_code == 403
    same = await alice.http.post(f"{API}/organizations", json={"name": "x"}, headers={"origin": "http://aiki"})
    assert same.status_code == 201


async def _audit(person: Person) -> list[dict[str, Any]]:
    resp = await person.http.get(f"{API}/organizations/{person.org_id}/audit")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def test_audit_rows(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    http = iam_aiki.new_http()
    await http.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": "wrong-wrong-wrong"})
    await iam_aiki.login("alice@example.com")
    created = await iam_aiki.create_key(alice, "admin")
    key_id = created["api_key"]["id"]
    run_id = await _start_run(iam_aiki, created["key"])
    cancel = await alice.http.post(
        f"{API}/runs/{run_id}/cancel",
        json={"reason": "by hand"},
        headers={"x-aiki-namespace": alice.namespace_id or ""},
    )
    assert cancel.status_code == 200, cancel.text
    await alice.http.delete(f"{API}/namespaces/{alice.namespace_id}/api-keys/{key_id}")
    bob = await iam_aiki.invite_and_join(alice, "bob@example.com")
    changed = await alice.http.patch(
        f"{API}/organizations/{alice.org_id}/members/{bob.user_id}", json={"role": "admin"}
    )
    assert changed.status_code == 200

    rows = await _audit(alice)
    seen = {(r["action"], r["outcome"]) for r in rows}
    assert {
        ("login", "failed"),
        ("login", "ok"),
        ("api_key.create", "ok"),
        ("api_key.revoke", "ok"),
        ("member.role_change", "ok"),
        ("run.cancel", "ok"),
    } <= seen
    cancel_row = next(r for r in rows if r["action"] == "run.cancel")
    assert cancel_row["actor_type"] == "user"
    assert cancel_row["actor_label"] == "alice@example.com"
    assert cancel_row["target_id"] == run_id
    assert cancel_row["namespace_id"] == alice.namespace_id
    failed = next(r for r in rows if r["action"] == "login" and r["outcome"] == "failed")
    assert failed["ip"]
    assert "wrong-wrong-wrong" not in str(rows)
    role_row = next(r for r in rows if r["action"] == "member.role_change")
    assert role_row["target_id"] == bob.user_id
    # Another organization sees none of it.
    eve = await iam_aiki.signup("eve@example.com")
    assert (await eve.http.get(f"{API}/organizations/{alice.org_id}/audit")).status_code == 404
    assert all(r["organization_id"] == eve.org_id for r in await _audit(eve))


def test_crypto_module_exports_no_stored_secret() -> None:
    # Derived keys differ per purpose: an invitation token's HMAC is not an API key's.
    s = crypto.Secrets("key-0123456789-abcdefghijklmnopqrstuvwxyz")
    assert s.api_key_hash("t") != s.invitation_hash("t")
