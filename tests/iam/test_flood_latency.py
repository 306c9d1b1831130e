"""An anonymous flood of sign-ups and logins does not starve an authenticated tenant.

The server runs in this process, on a real socket; the flood (``python -m bench.auth_flood
flood``) and the tenant (``... tenant``, sequential ``GET /api/v1/runs`` with an API key) run in
processes of their own, as in the ``signup_flood`` bench scenario (``bench/auth_flood.py``), so
the clients' CPU is not charged to the server's event loop. Every throttle is off: every flood
request reaches argon2, and only the hashing pool protects the loop.

Argon2 on the event loop (each computation tens of milliseconds of CPU) made the tenant's median
request wait behind the hashes: about 50x slower on a 2-core machine. The test asserts the cause
exactly, that no argon2 computation runs on the event loop's thread, and the effect loosely:
timing bounds flake on a shared 2-core machine (other processes take the CPU whatever this code
does), so the tenant's p50 and p99 during the flood must stay within 2x of their quiet values plus a
fixed allowance each (:data:`P50_ALLOWANCE_MS`, :data:`P99_ALLOWANCE_MS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import argon2._password_hasher as argon2_hasher
import argon2.low_level
import pytest
import uvicorn

from aiki import server
from aiki.iam.config import IamConfig
from aiki.platform.db.engine import Database
from bench.auth_flood import SECRET, VARIANT_FIELDS, measure_against

# Within 2x, plus allowances for a shared machine's noise. Measured on 2 cores with `stress-ng --cpu
# 2` beside the test (6 runs): the tenant's p50 went from 2-4 ms alone to 2.6-6.8 ms in the flood,
# its p99 from 4-24 ms to 11-77 ms. With argon2 on the event loop (main) the p99 in the flood was
# 525 ms against 15 ms alone, which the p99 bound catches; the p50 (7.7 ms against 3.3) barely
# moves, as most of the tenant's requests fall between two hashes.
P50_ALLOWANCE_MS = 10.0
P99_ALLOWANCE_MS = 100.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response waited 40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    port = sock.getsockname()[1]
    srv = _Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    try:
        while not srv.started:  # uvicorn exposes readiness only as a flag
            if task.done():
                await task
                raise RuntimeError("the test server did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


async def test_a_tenant_keeps_its_latency_while_anonymous_signups_flood(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    in_pool: list[str] = []

    def watched(func: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            (on_loop if threading.get_ident() == loop_thread else in_pool).append(func.__name__)
            return func(*args, **kwargs)

        return call

    # PasswordHasher calls these two through its module: every argon2 computation passes here.
    monkeypatch.setattr(argon2_hasher, "hash_secret", watched(argon2.low_level.hash_secret))
    monkeypatch.setattr(argon2_hasher, "verify_secret", watched(argon2.low_level.verify_secret))
    config = IamConfig(
        secret_key=SECRET,
        base_url="http://aiki",
        secure_cookies=False,
        email_verification=False,  # the tenant signs up and acts at once
        **VARIANT_FIELDS["unthrottled"],
    )
    aiki_server = server(db=Database(db_url), iam=config)
    await aiki_server.runtime.start()
    try:
        async with _serving(aiki_server.handler) as url:
            figures = await measure_against(url, tenant_requests=100, flood_concurrency=8, warmup=10)
    finally:
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()
    assert figures["flood_requests"] >= 8, figures  # the flood really ran...
    assert len(in_pool) >= 8, figures  # ...and hashed
    assert on_loop == [], f"{len(on_loop)} argon2 computations ran on the event loop thread"
    assert figures["flood_p50_ms"] <= 2 * figures["alone_p50_ms"] + P50_ALLOWANCE_MS, figures
    assert figures["flood_p99_ms"] <= 2 * figures["alone_p99_ms"] + P99_ALLOWANCE_MS, figures
