"""The per-key request limit counted in memory: exact in one process, folded into the shared counter
now and then (not per request), and shared approximately between processes."""

from __future__ import annotations

import asyncio

import pytest

from aiki.iam.rate_limit import WINDOW_MS, ApiRateLimiter, Fold
from aiki.platform.domain.errors import RateLimited


class SharedCounter:
    """What ``RateLimitRepository.hit`` does, in memory: one fixed window per key, shared by all."""

    def __init__(self) -> None:
        self.count = 0
        self.start = 0
        self.folds: list[int] = []

    def fold_at(self, now: int) -> Fold:
        async def fold(hits: int) -> tuple[int, int]:
            self.folds.append(hits)
            if self.count == 0 or self.start <= now - WINDOW_MS:
                self.count, self.start = hits, now
            else:
                self.count += hits
            return self.count, self.start

        return fold


async def _allowed(limiter: ApiRateLimiter, shared: SharedCounter, limit: int, now: int, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            await limiter.hit("k", limit, now, shared.fold_at(now))
            ok += 1
        except RateLimited:
            pass
    return ok


async def test_one_process_is_exact_and_folds_a_tenth_of_the_limit_at_a_time() -> None:
    limiter, shared = ApiRateLimiter(), SharedCounter()
    assert await _allowed(limiter, shared, 100, 1_000, 100) == 100
    with pytest.raises(RateLimited) as raised:
        await limiter.hit("k", 100, 1_000, shared.fold_at(1_000))
    assert raised.value.retry_after_s == 60
    assert len(shared.folds) <= 12  # not one write per request
    assert sum(shared.folds) >= 100 - 10  # at most a tenth of the limit is still unfolded


async def test_a_second_passing_folds_and_a_new_window_lets_requests_in() -> None:
    limiter, shared = ApiRateLimiter(), SharedCounter()
    await _allowed(limiter, shared, 1_000, 0, 5)
    folds = len(shared.folds)
    await _allowed(limiter, shared, 1_000, 1_000, 1)
    assert len(shared.folds) == folds + 1
    assert await _allowed(limiter, shared, 3, 2_000, 3) == 0  # 7 in the window already
    assert await _allowed(limiter, shared, 3, WINDOW_MS, 3) == 3


async def test_two_processes_share_one_budget_approximately() -> None:
    shared = SharedCounter()
    a, b = ApiRateLimiter(), ApiRateLimiter()
    limit, allowed = 1_000, 0
    for step in range(400):  # both busy for four seconds, 10 requests each per 10 ms
        now = step * 10
        allowed += await _allowed(a, shared, limit, now, 10)
        allowed += await _allowed(b, shared, limit, now, 10)
    assert limit <= allowed <= limit + 2 * limit // 10


async def test_a_failed_fold_keeps_its_hits_for_the_next_one() -> None:
    limiter, shared = ApiRateLimiter(), SharedCounter()

    async def broken(hits: int) -> tuple[int, int]:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        await limiter.hit("k", 10, 0, broken)
    await limiter.hit("k", 10, 0, shared.fold_at(0))
    assert shared.folds == [2]


async def test_requests_during_a_fold_count_locally_and_do_not_fold_again() -> None:
    limiter, shared = ApiRateLimiter(), SharedCounter()
    gate = asyncio.Event()
    folds: list[int] = []

    async def slow(hits: int) -> tuple[int, int]:
        folds.append(hits)
        await gate.wait()
        return sum(folds), 0

    first = asyncio.create_task(limiter.hit("k", 3, 0, slow))
    await asyncio.sleep(0)
    await limiter.hit("k", 3, 0, shared.fold_at(0))
    await limiter.hit("k", 3, 0, shared.fold_at(0))
    gate.set()
    await first
    assert folds == [1]
    assert shared.folds == []  # the two requests in between counted locally
    with pytest.raises(RateLimited):  # 1 folded + 2 local + this one > 3
        await limiter.hit("k", 3, 0, slow)
    assert folds == [1, 3]


async def test_the_state_of_the_least_recently_used_keys_is_bounded() -> None:
    limiter, shared = ApiRateLimiter(max_keys=2), SharedCounter()
    for key_id in "abc":
        await limiter.hit(key_id, 1_000, 0, shared.fold_at(0))
    assert len(shared.folds) == 3  # a key's first hit folds
    await limiter.hit("c", 1_000, 0, shared.fold_at(0))
    assert len(shared.folds) == 3  # "c" is known: counted locally
    await limiter.hit("a", 1_000, 0, shared.fold_at(0))
    assert len(shared.folds) == 4  # "a" was dropped: it starts over with a fold
