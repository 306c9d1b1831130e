"""An authenticated tenant's latency alone and while anonymous sign-ups and logins flood the server.

One IAM-enabled server process (the embedded server, requests through its ASGI app): a tenant
signs up, makes an API key and sends ``GET /api/v1/runs`` one after another, first alone, then
while ``flood_concurrency`` anonymous clients keep signing up (fresh emails) and logging in with
wrong passwords, each request from its own client address. Each argon2 computation takes tens of
milliseconds of CPU: on the event loop it stalls every other request of the process.

Besides the tenant's latencies, a probe measures the event loop's lag (how late a 5 ms timer
fires); ``stalls`` counts lags over :data:`STALL_MS`. Used by the ``signup_flood`` scenario and,
with smaller numbers, by ``tests/iam/test_flood_latency.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections import Counter
from typing import Any

import httpx

from aiki import server
from aiki.iam.config import IamConfig
from aiki.platform.db.engine import Database
from bench.stats import latency_summary

API = "/api/v1"
PASSWORD = "correct horse battery staple"
SECRET = "bench-flood-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
BASE_URL = "http://aiki"
STALL_MS = 25.0
_PROBE_S = 0.005


def _config(overrides: dict[str, Any]) -> IamConfig:
    """Production defaults, with ``overrides`` that this version of ``IamConfig`` knows (so the
    same bench runs on older versions, for before/after figures)."""
    known = {f.name for f in dataclasses.fields(IamConfig)}
    values = {k: v for k, v in overrides.items() if k in known}
    return IamConfig(secret_key=SECRET, base_url=BASE_URL, secure_cookies=False, **values)


def _client(app: Any, ip: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40_000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers or {}, timeout=60)


class _LoopProbe:
    """How late a short timer fires, over and over: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(_PROBE_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t0 - _PROBE_S) * 1000))

    def start(self) -> None:
        self.lags_ms.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        lags = sorted(self.lags_ms) or [0.0]
        return {
            "lag_p50_ms": lags[len(lags) // 2],
            "lag_max_ms": lags[-1],
            "stalls": sum(1 for lag in lags if lag > STALL_MS),
            "probes": len(self.lags_ms),
        }


async def _tenant_latencies(http: httpx.AsyncClient, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await http.get(f"{API}/runs")
        samples.append(time.perf_counter() - t0)
        if resp.status_code != 200:
            raise RuntimeError(f"the tenant's request failed during the flood: {resp.status_code} {resp.text[:200]}")
    return samples


async def measure(
    db_url: str,
    *,
    tenant_requests: int = 200,
    flood_concurrency: int = 8,
    warmup: int = 20,
    iam_overrides: dict[str, Any] | None = None,
) -> dict[str, float | int]:
    """Run the scenario on a fresh database at ``db_url``; return flat numbers (ms, counts)."""
    config = _config(iam_overrides or {})
    aiki_server = server(db=Database(db_url), iam=config)
    await aiki_server.runtime.start()
    app = aiki_server.handler
    clients: list[httpx.AsyncClient] = []
    try:
        owner = _client(app, "192.0.2.1")
        clients.append(owner)
        signed = await owner.post(f"{API}/auth/signup", json={"email": "tenant@example.com", "password": PASSWORD})
        signed.raise_for_status()
        ns = signed.json()["namespace"]["id"]
        made = await owner.post(f"{API}/namespaces/{ns}/api-keys", json={"name": "tenant", "role": "read"})
        made.raise_for_status()
        tenant = _client(app, "192.0.2.1", {"authorization": f"Bearer {made.json()['key']}"})
        clients.append(tenant)
        await _tenant_latencies(tenant, warmup)

        probe = _LoopProbe()
        probe.start()
        alone = await _tenant_latencies(tenant, tenant_requests)
        alone_lag = await probe.stop()

        statuses: Counter[int] = Counter()
        stop = asyncio.Event()
        under_way = asyncio.Event()  # set once as many flood requests as clients have been answered
        serial = itertools.count()

        async def flooder() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as anonymous:
                while not stop.is_set():
                    i = next(serial)
                    # Every request from its own address: per-address limits do not stop this flood.
                    transport.client = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 40_000)
                    if i % 2:
                        body = {"email": f"flood-{i}@example.com", "password": PASSWORD}
                        resp = await anonymous.post(f"{API}/auth/signup", json=body)
                    else:
                        body = {"email": "tenant@example.com", "password": f"wrong guess number {i}"}
                        resp = await anonymous.post(f"{API}/auth/login", json=body)
                    statuses[resp.status_code] += 1
                    if sum(statuses.values()) >= flood_concurrency:
                        under_way.set()

        flood = [asyncio.create_task(flooder()) for _ in range(flood_concurrency)]
        try:
            await under_way.wait()
            probe.start()
            t0 = time.perf_counter()
            during = await _tenant_latencies(tenant, tenant_requests)
            elapsed = time.perf_counter() - t0
            flood_lag = await probe.stop()
        finally:
            stop.set()
            await asyncio.gather(*flood, return_exceptions=True)
        a, d = latency_summary(alone), latency_summary(during)
        total = sum(statuses.values())
        return {
            "alone_p50_ms": a["p50_ms"],
            "alone_p99_ms": a["p99_ms"],
            "alone_max_ms": a["max_ms"],
            "flood_p50_ms": d["p50_ms"],
            "flood_p99_ms": d["p99_ms"],
            "flood_max_ms": d["max_ms"],
            "p50_ratio": d["p50_ms"] / a["p50_ms"],
            "alone_stalls": alone_lag["stalls"],
            "flood_stalls": flood_lag["stalls"],
            "flood_lag_max_ms": flood_lag["lag_max_ms"],
            "flood_probes": flood_lag["probes"],
            "flood_requests": total,
            "flood_per_s": total / elapsed if elapsed else 0.0,
            **{f"flood_status_{code}": count for code, count in sorted(statuses.items())},
        }
    finally:
        for http in clients:
            await http.aclose()
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()
