"""An authenticated tenant's latency alone and while anonymous sign-ups and logins flood the server.

Measured as users run it, each party in its own process:

- the server: an ``aiki server`` process with IAM on (:func:`measure`), or, in
  ``tests/iam/test_flood_latency.py``, the test's own process serving on a real socket (so the test
  can watch which thread runs argon2);
- the flood: ``python -m bench.auth_flood flood URL`` (:func:`flood_main`), ``concurrency`` anonymous
  clients from loopback, each signing up with fresh emails and logging in with wrong passwords as
  fast as it is answered, ignoring ``Retry-After``. It runs at a low CPU priority
  (:data:`FLOOD_NICE`): a real flood's clients run on other machines, and on the bench machine's
  two cores a flood client at the server's priority takes CPU from the server that an attacker
  could not take;
- the tenant: ``python -m bench.auth_flood tenant URL KEY N`` (:func:`tenant_main`), sending
  ``GET /api/v1/runs`` with an API key one request after another, first alone, then during the flood.

Variants (:data:`VARIANTS`, environment of the server):

- ``loopback``: production defaults; the flood comes from one address, so the per-address limits
  answer most of it with 429 at the price of one counter upsert each;
- ``botnet``: per-address limits off (``AIKI_THROTTLE_*_PER_IP=0``, ``AIKI_LOGIN_MAX_PER_IP`` and
  ``AIKI_LOGIN_FREE_FAILURES`` huge), modelling a flood from many addresses: only the global limits
  and the argon2 pool's admission bound stand in the way;
- ``unthrottled``: every throttle off: every flood request reaches argon2 (the worst case; only the
  pool protects the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.stats import latency_summary

API = "/api/v1"
PASSWORD = "correct horse battery staple"
SECRET = "bench-flood-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TENANT_EMAIL = "tenant@example.com"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Niceness of the flood's process (see the module docstring); the server and the tenant keep 0.
FLOOD_NICE = 10
UNDER_WAY = "flood under way"

_PER_IP_OFF = {
    "AIKI_THROTTLE_SIGNUP_PER_IP": "0",
    "AIKI_THROTTLE_LOGIN_PER_IP": "0",
    "AIKI_THROTTLE_PASSWORD_RESET_PER_IP": "0",
    "AIKI_THROTTLE_INVITATION_ACCEPT_PER_IP": "0",
    "AIKI_LOGIN_MAX_PER_IP": "1000000000",
    "AIKI_LOGIN_FREE_FAILURES": "1000000000",
}
VARIANTS: dict[str, dict[str, str]] = {
    "loopback": {},
    "botnet": _PER_IP_OFF,
    "unthrottled": {
        **_PER_IP_OFF,
        "AIKI_THROTTLE_SIGNUP_GLOBAL": "0",
        "AIKI_THROTTLE_LOGIN_GLOBAL": "0",
        "AIKI_THROTTLE_PASSWORD_RESET_GLOBAL": "0",
        "AIKI_THROTTLE_INVITATION_ACCEPT_GLOBAL": "0",
    },
}
# The same settings as IamConfig fields, for a server built in-process (the test).
VARIANT_FIELDS: dict[str, dict[str, int]] = {
    name: {k.removeprefix("AIKI_").lower(): int(v) for k, v in env.items()} for name, env in VARIANTS.items()
}


# -- the flood's and the tenant's processes --------------------------------------------------------


async def _flood(url: str, concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serial = itertools.count()
    announced = False

    async def flooder() -> None:
        nonlocal announced
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as anonymous:
            while not stop.is_set():
                i = next(serial)
                try:
                    if i % 2:
                        body = {"email": f"flood-{os.getpid()}-{i}@example.com", "password": PASSWORD}
                        resp = await anonymous.post(f"{API}/auth/signup", json=body)
                    else:
                        body = {"email": TENANT_EMAIL, "password": f"wrong guess number {i}"}
                        resp = await anonymous.post(f"{API}/auth/login", json=body)
                    statuses[resp.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[-1] += 1  # a transport error: counted, not fatal (the server may shed)
                    print(f"flood request failed: {exc!r}", file=sys.stderr)
                if not announced and sum(statuses.values()) >= concurrency:
                    announced = True
                    print(UNDER_WAY, flush=True)

    await asyncio.gather(*(flooder() for _ in range(concurrency)))
    return statuses


def flood_main(url: str, concurrency: int) -> None:
    """Flood ``url`` until SIGTERM; then print ``{"status": count, ...}`` as the last line."""
    with contextlib.suppress(OSError):
        os.nice(FLOOD_NICE)
    statuses = asyncio.run(_flood(url, concurrency))
    print(json.dumps({str(k): v for k, v in sorted(statuses.items())}), flush=True)


async def _tenant(url: str, key: str, n: int) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"authorization": f"Bearer {key}"}) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            resp = await http.get(f"{API}/runs")
            samples.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise RuntimeError(f"the tenant's request failed: {resp.status_code} {resp.text[:200]}")
    return samples


def tenant_main(url: str, key: str, n: int) -> None:
    """Send ``n`` sequential ``GET /runs``; print the latencies (s) as one JSON list."""
    print(json.dumps(asyncio.run(_tenant(url, key, n))), flush=True)


# -- the orchestration -------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


async def _tenant_process(url: str, key: str, n: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.auth_flood",
        "tenant",
        url,
        key,
        str(n),
        cwd=REPO_ROOT,
        env=_child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the tenant process failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    samples: list[float] = json.loads(out.decode().strip().splitlines()[-1])
    return samples


class _FloodProcess:
    def __init__(self, url: str, concurrency: int) -> None:
        self._argv = [sys.executable, "-m", "bench.auth_flood", "flood", url, "--concurrency", str(concurrency)]
        self._proc: asyncio.subprocess.Process | None = None
        self._lines: list[str] = []

    async def start(self, timeout: float = 60.0) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv, cwd=REPO_ROOT, env=_child_env(), stdout=asyncio.subprocess.PIPE, stderr=None
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if line.decode().strip() != UNDER_WAY:
            await self._proc.wait()
            raise RuntimeError(f"the flood process did not start ({self._proc.returncode}): {line!r}")

    async def stop(self) -> dict[str, int]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self._proc.stdout.read(), 120)
        await self._proc.wait()
        lines = out.decode().strip().splitlines()
        if self._proc.returncode != 0 or not lines:
            raise RuntimeError(f"the flood process failed ({self._proc.returncode})")
        return {k: int(v) for k, v in json.loads(lines[-1]).items()}

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()


async def tenant_key(url: str) -> str:
    """Sign the tenant up on a fresh server and make it a read key of its namespace."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        signed = await http.post(f"{API}/auth/signup", json={"email": TENANT_EMAIL, "password": PASSWORD})
        signed.raise_for_status()
        namespace_id = signed.json()["namespace"]["id"]
        cookie = signed.headers["set-cookie"].split(";")[0]  # the cookie may be Secure: sent by hand
        made = await http.post(
            f"{API}/namespaces/{namespace_id}/api-keys",
            json={"name": "tenant", "role": "read"},
            # A session's unsafe request must show it comes from the server's pages (CSRF rules).
            headers={"cookie": cookie, "sec-fetch-site": "same-origin"},
        )
        made.raise_for_status()
        key: str = made.json()["key"]
        return key


async def measure_against(
    url: str, *, tenant_requests: int = 200, flood_concurrency: int = 32, warmup: int = 20
) -> dict[str, float | int]:
    """The tenant alone, then during the flood, against a running server at ``url``."""
    key = await tenant_key(url)
    await _tenant_process(url, key, warmup)
    alone = await _tenant_process(url, key, tenant_requests)
    flood = _FloodProcess(url, flood_concurrency)
    try:
        await flood.start()
        t0 = time.perf_counter()
        during = await _tenant_process(url, key, tenant_requests)
        elapsed = time.perf_counter() - t0
        statuses = await flood.stop()
    finally:
        flood.kill()
    a, d = latency_summary(alone), latency_summary(during)
    total = sum(statuses.values())
    return {
        "alone_p50_ms": a["p50_ms"],
        "alone_p99_ms": a["p99_ms"],
        "flood_p50_ms": d["p50_ms"],
        "flood_p99_ms": d["p99_ms"],
        "flood_max_ms": d["max_ms"],
        "p50_ratio": d["p50_ms"] / a["p50_ms"],
        "p99_ratio": d["p99_ms"] / a["p99_ms"],
        "flood_requests": total,
        "flood_per_s": total / elapsed if elapsed else 0.0,
        **{f"flood_status_{code}": count for code, count in statuses.items()},
    }


def _server_argv() -> list[str]:
    """``-m aiki.cli``, or the ``aiki.cli`` of the checkout at ``$BENCH_FLOOD_SERVER_SOURCE`` (before/after figures)."""
    source = os.environ.get("BENCH_FLOOD_SERVER_SOURCE")
    if not source:
        return ["-m", "aiki.cli"]
    code = f"import runpy, sys; sys.path.insert(0, {source!r}); runpy.run_module('aiki.cli', run_name='__main__')"
    return ["-c", code]


async def measure(
    db_url: str,
    *,
    variant: str = "botnet",
    tenant_requests: int = 200,
    flood_concurrency: int = 32,
    warmup: int = 20,
    server_env: dict[str, str] | None = None,
) -> dict[str, float | int]:
    """Start an ``aiki server`` on the fresh database at ``db_url`` with ``variant``'s settings; measure."""
    from bench.systems.processes import Child, free_port

    if variant not in VARIANTS:
        raise ValueError(f"unknown flood variant {variant!r}; one of {', '.join(VARIANTS)}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AIKI_LOG_LEVEL": "WARNING",
        "AIKI_SECRET_KEY": SECRET,
        "AIKI_BASE_URL": url,
        "AIKI_EMAIL_VERIFICATION": "off",  # sign-ups answer at once (a setting of a later branch)
        **VARIANTS[variant],
        **(server_env or {}),
    }
    server = Child("aiki-server", [*_server_argv(), "server", "--port", str(port), "--database-url", db_url], env)

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{url}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await server.wait_until(ready)
        return await measure_against(
            url, tenant_requests=tenant_requests, flood_concurrency=flood_concurrency, warmup=warmup
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_flood", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    flood = sub.add_parser("flood", help="flood URL with anonymous sign-ups and logins until SIGTERM")
    flood.add_argument("url")
    flood.add_argument("--concurrency", type=int, default=32)
    tenant = sub.add_parser("tenant", help="N sequential GET /runs with the API key; print latencies")
    tenant.add_argument("url")
    tenant.add_argument("key")
    tenant.add_argument("n", type=int)
    args = parser.parse_args(argv)
    if args.command == "flood":
        flood_main(args.url, args.concurrency)
    else:
        tenant_main(args.url, args.key, args.n)


if __name__ == "__main__":
    main()
