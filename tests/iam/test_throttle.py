"""Unauthenticated abuse, on both databases: per-action throttles (per address and global), login
failures slowed per (account, address) instead of locking the owner out, a per-address failure cap
across accounts, and the same answer and work for known and unknown emails."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aiki.iam.throttle import throttle
from aiki.platform.domain.errors import RateLimited
from tests.iam_support import API, PASSWORD, IamHarness

ATTACKER = "203.0.113.66"
OWNER_IP = "198.51.100.7"


async def _harness(db_url: str, **config: object) -> IamHarness:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    return await IamHarness(kind, db_url, **config).start()


async def test_attacker_failures_slow_the_attacker_not_the_owner_at_their_usual_address(db_url: str) -> None:
    h = await _harness(db_url)
    try:
        await h.signup("owner@example.com")
        attacker = h.new_http(ip=ATTACKER)
        guess = {"email": "owner@example.com", "password": "not the password at all"}
        failures, waits = 0, []
        while failures < 20:
            resp = await attacker.post(f"{API}/auth/login", json=guess)
            if resp.status_code == 429:
                waits.append(int(resp.headers["retry-after"]))
                h.advance(waits[-1] * 1000)  # the attacker waits as told, then guesses again
                continue
            assert resp.status_code == 401, resp.text
            failures += 1
        # After the free failures each wait doubles (2, 4, 8, ...) up to the cap.
        cap = h.iam.config.login_max_delay_s
        assert waits == [min(2**k, cap) for k in range(1, len(waits) + 1)]
        assert len(waits) == 20 - h.iam.config.login_free_failures - 1  # the first wait follows failure 6
        # The right password from the attacker's address waits too...
        right = await attacker.post(f"{API}/auth/login", json={"email": "owner@example.com", "password": PASSWORD})
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) == cap
        # ...but the owner, from their usual address, logs in at once.
        owner = h.new_http(ip=OWNER_IP)
        ok = await owner.post(f"{API}/auth/login", json={"email": "owner@example.com", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
    finally:
        await h.close()


async def test_a_successful_login_clears_the_address_failures(db_url: str) -> None:
    h = await _harness(db_url, login_free_failures=2)
    try:
        await h.signup("owner@example.com")
        http = h.new_http(ip=OWNER_IP)
        wrong = {"email": "owner@example.com", "password": "mistyped password!"}
        right = {"email": "owner@example.com", "password": PASSWORD}
        for _ in range(3):
            assert (await http.post(f"{API}/auth/login", json=wrong)).status_code == 401
        assert (await http.post(f"{API}/auth/login", json=right)).status_code == 429
        h.advance(2_000)
        assert (await http.post(f"{API}/auth/login", json=right)).status_code == 200
        # The counter starts again: two free mistakes, no wait.
        for _ in range(2):
            assert (await http.post(f"{API}/auth/login", json=wrong)).status_code == 401
        assert (await http.post(f"{API}/auth/login", json=right)).status_code == 200
    finally:
        await h.close()


async def test_credential_stuffing_from_one_address_is_capped_across_accounts(db_url: str) -> None:
    h = await _harness(db_url, login_max_per_ip=5)
    try:
        await h.signup("victim@example.com")
        stuffer = h.new_http(ip=ATTACKER)
        for i in range(5):  # one guess per account: no per-account delay ever starts
            body = {"email": f"user{i}@example.com", "password": "Summer2026!Summer"}
            assert (await stuffer.post(f"{API}/auth/login", json=body)).status_code == 401
        blocked = await stuffer.post(f"{API}/auth/login", json={"email": "victim@example.com", "password": PASSWORD})
        assert blocked.status_code == 429
        window = h.iam.config.login_window_s
        assert 0 < int(blocked.headers["retry-after"]) <= window
        other = h.new_http(ip=OWNER_IP)
        ok = await other.post(f"{API}/auth/login", json={"email": "victim@example.com", "password": PASSWORD})
        assert ok.status_code == 200
        h.advance(window * 1000)
        again = await stuffer.post(f"{API}/auth/login", json={"email": "victim@example.com", "password": PASSWORD})
        assert again.status_code == 200, again.text
    finally:
        await h.close()


async def test_signups_are_throttled_per_address_then_globally(db_url: str) -> None:
    h = await _harness(db_url, throttle_signup_per_ip=2, throttle_signup_global=3)
    try:
        first = h.new_http(ip="192.0.2.1")
        statuses = []
        for i in range(3):
            body = {"email": f"a{i}@example.com", "password": PASSWORD}
            statuses.append((await first.post(f"{API}/auth/signup", json=body)).status_code)
        assert statuses == [202, 202, 429]
        limited = await first.post(f"{API}/auth/signup", json={"email": "a9@example.com", "password": PASSWORD})
        assert limited.json()["code"] == "rate_limited"
        assert 0 < int(limited.headers["retry-after"]) <= h.iam.config.throttle_window_s
        # The refusals of one address did not use up everyone's allowance: one more sign-up fits.
        second = h.new_http(ip="192.0.2.2")
        ok = await second.post(f"{API}/auth/signup", json={"email": "b0@example.com", "password": PASSWORD})
        assert ok.status_code == 202
        third = h.new_http(ip="192.0.2.3")
        full = await third.post(f"{API}/auth/signup", json={"email": "c0@example.com", "password": PASSWORD})
        assert full.status_code == 429
        assert "on this server" in full.json()["detail"]
        h.advance(h.iam.config.throttle_window_s * 1000)
        later = await third.post(f"{API}/auth/signup", json={"email": "c0@example.com", "password": PASSWORD})
        assert later.status_code == 202, later.text
    finally:
        await h.close()


async def test_invitation_acceptance_and_logins_are_throttled_per_address(db_url: str) -> None:
    h = await _harness(db_url, throttle_invitation_accept_per_ip=2, throttle_login_per_ip=2)
    try:
        person = await h.signup("someone@example.com")
        statuses = [
            (await person.http.post(f"{API}/invitations/accept", json={"token": f"made-up-{i}"})).status_code
            for i in range(3)
        ]
        assert 429 not in statuses[:2]  # unknown tokens: refused for what they are
        assert statuses[2] == 429
        http = h.new_http(ip=OWNER_IP)
        body = {"email": "someone@example.com", "password": PASSWORD}
        logins = [(await http.post(f"{API}/auth/login", json=body)).status_code for _ in range(3)]
        assert logins == [200, 200, 429]
    finally:
        await h.close()


async def test_throttle_counts_password_resets_and_is_shared_through_the_database(db_url: str) -> None:
    h = await _harness(db_url, throttle_password_reset_per_ip=1, throttle_password_reset_global=0)
    try:
        await throttle(h.iam, "password_reset", "192.0.2.9")
        with pytest.raises(RateLimited) as refused:
            await throttle(h.iam, "password_reset", "192.0.2.9")
        assert refused.value.retry_after_s >= 1
        await throttle(h.iam, "password_reset", "192.0.2.10")  # another address has its own count
        async with h.server.db.engine.connect() as conn:
            keys = (await conn.execute(sa.text("SELECT key FROM rate_limits ORDER BY key"))).scalars().all()
        assert "throttle:password_reset:ip:192.0.2.9" in keys  # every replica reads the same row
        with pytest.raises(ValueError, match="unknown throttled action"):
            await throttle(h.iam, "sign_in", None)  # type: ignore[arg-type]
    finally:
        await h.close()


async def test_known_and_unknown_emails_get_the_same_answer_and_the_same_argon2_work(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("known@example.com")
    passwords = iam_aiki.iam.passwords
    http = iam_aiki.new_http()
    answers = []
    for email in ("known@example.com", "unknown@example.com"):
        before = passwords.verifications
        resp = await http.post(f"{API}/auth/login", json={"email": email, "password": "a wrong password!"})
        assert passwords.verifications - before == 1, email  # a real verification, or a dummy one
        answers.append((resp.status_code, resp.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    # An over-long password is refused after the same work as any other wrong one.
    before = passwords.verifications
    long = await http.post(f"{API}/auth/login", json={"email": "known@example.com", "password": "x" * 5000})
    assert long.status_code == 401
    assert passwords.verifications - before == 1
