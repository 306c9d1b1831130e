"""A flood's refused requests cost the server no database work, on both databases.

Each refused request of an anonymous flood used to make its queries anyway (a throttle counter
upsert, the login guard's and the account's lookups) before the 429: work on the event loop that
slowed every other tenant's requests (``bench/README.md``, "The sign-up flood"). A throttle's
refusal is now remembered until its window ends, and a full argon2 pool refuses sign-up and login
before any query.
"""

from __future__ import annotations

import asyncio
import threading

import sqlalchemy as sa

from tests.iam_support import API, PASSWORD, IamHarness

ATTACKER = "203.0.113.66"


async def _harness(db_url: str, **config: object) -> IamHarness:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    return await IamHarness(kind, db_url, **config).start()


async def _counter(h: IamHarness, key: str) -> int | None:
    async with h.iam.db.transaction() as conn:
        count = (await conn.execute(sa.text("SELECT count FROM rate_limits WHERE key = :key"), {"key": key})).scalar()
    return None if count is None else int(count)


async def test_a_refused_address_is_refused_again_without_a_query_until_its_window_ends(db_url: str) -> None:
    h = await _harness(db_url, throttle_signup_per_ip=2)
    try:
        attacker = h.new_http(ip=ATTACKER)
        key = f"throttle:signup:ip:{ATTACKER}"
        answers = []
        for i in range(6):
            resp = await attacker.post(f"{API}/auth/signup", json={"email": f"a{i}@example.com", "password": PASSWORD})
            answers.append(resp.status_code)
        assert answers == [202, 202, 429, 429, 429, 429]
        assert int(resp.headers["retry-after"]) >= 1
        assert await _counter(h, key) == 3  # the first refusal counted; its repeats made no query
        h.advance(h.iam.config.throttle_window_s * 1000)
        again = await attacker.post(f"{API}/auth/signup", json={"email": "later@example.com", "password": PASSWORD})
        assert again.status_code == 202, again.text  # refused until the window's end, not for ever
    finally:
        await h.close()


async def test_a_full_argon2_pool_refuses_signup_and_login_before_any_query(db_url: str) -> None:
    h = await _harness(
        db_url,
        password_hash_threads=1,
        password_hash_queue=0,
        throttle_signup_per_ip=100,
        throttle_login_per_ip=100,
    )
    release = threading.Event()
    started = threading.Event()
    try:
        await h.signup("owner@example.com")
        passwords = h.iam.passwords
        real_hash = passwords._hash_sync

        def held_hash(password: str) -> str:
            started.set()
            release.wait(30)
            return real_hash(password)

        passwords._hash_sync = held_hash  # type: ignore[method-assign]
        first = h.new_http(ip="198.51.100.1")
        body = {"email": "first@example.com", "password": PASSWORD}
        holding = asyncio.create_task(first.post(f"{API}/auth/signup", json=body))
        assert await asyncio.to_thread(started.wait, 30)  # the one admitted hash is under way

        attacker = h.new_http(ip=ATTACKER)
        signup = await attacker.post(f"{API}/auth/signup", json={"email": "x@example.com", "password": PASSWORD})
        login = await attacker.post(f"{API}/auth/login", json={"email": "owner@example.com", "password": "wrong guess"})
        for resp in (signup, login):
            assert resp.status_code == 429, resp.text
            assert resp.headers["retry-after"] == "1"
        # Refused before the throttles counted them: no query was made for either.
        assert await _counter(h, f"throttle:signup:ip:{ATTACKER}") is None
        assert await _counter(h, f"throttle:login:ip:{ATTACKER}") is None

        release.set()
        assert (await holding).status_code == 202
    finally:
        release.set()
        await h.close()
