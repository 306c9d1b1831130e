"""The password policy (ASVS 5 L2) and the bounded argon2 pool, without a server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aiki.iam import password_policy
from aiki.iam.crypto import Passwords
from aiki.platform.domain.errors import InputInvalid, RateLimited


@pytest.mark.parametrize(
    ("password", "email", "reason"),
    [
        ("password", None, "at least 12"),
        ("elevenchars", None, "at least 12"),
        ("x" * 257, None, "at most 256"),
        ("twelve chars\x00ok", None, "NUL"),
        ("123456654321", None, "most common"),
        ("Q1W2E3R4T5Y6", None, "most common"),  # case-insensitive
        ("correct horse battery staple", "HorsE@example.com", "email"),
        ("my-Alice-password-2026", "alice@example.com", "email"),
    ],
)
def test_policy_refuses_with_a_reason_naming_the_field(password: str, email: str | None, reason: str) -> None:
    with pytest.raises(InputInvalid) as refused:
        password_policy.check_policy(password, email=email)
    assert refused.value.field == "$.password"
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("password", "email"),
    [
        ("correct horse battery staple", "alice@example.com"),
        ("x" * 256, None),
        ("al-is-short-local-part", "al@example.com"),  # a local part under 3 characters is not checked
        ("ünïcödé pässwörd ✓", None),  # 12+ characters, not bytes
    ],
)
def test_policy_accepts(password: str, email: str | None) -> None:
    password_policy.check_policy(password, email=email)


def test_the_shipped_list_has_the_10000_most_common_passwords() -> None:
    common = password_policy.common_passwords()
    assert len(common) == 10_000
    assert {"123456", "password", "qwerty"} <= common


async def test_hashing_runs_off_the_event_loop() -> None:
    passwords = Passwords(threads=1)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = passwords._hash_sync

    def spy(password: str) -> str:
        threads.append(threading.get_ident())
        return original(password)

    passwords._hash_sync = spy  # type: ignore[method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        stored = await passwords.hash("correct horse battery staple")
    finally:
        task.cancel()
        passwords.close()
    assert threads
    assert loop_thread not in threads
    assert ticks > 0  # the loop kept running while argon2 worked
    assert stored.startswith("$argon2id$")


async def test_a_full_hashing_queue_answers_429_with_retry_after_instead_of_growing() -> None:
    passwords = Passwords(threads=1, queue_per_thread=1)  # one hashing, one waiting
    release = threading.Event()
    original = passwords._hash_sync

    def slow(password: str) -> str:
        release.wait(10)
        return original(password)

    passwords._hash_sync = slow  # type: ignore[method-assign]
    try:
        admitted = [asyncio.create_task(passwords.hash("correct horse battery staple")) for _ in range(2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(RateLimited) as refused:
            await passwords.hash("correct horse battery staple")
        assert time.perf_counter() - started < 1  # refused at once, not queued
        assert refused.value.retry_after_s >= 1
        release.set()
        assert all(h.startswith("$argon2id$") for h in await asyncio.gather(*admitted))
        await passwords.hash("correct horse battery staple")  # room again
    finally:
        release.set()
        passwords.close()
