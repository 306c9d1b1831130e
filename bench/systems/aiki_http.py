"""Aiki across processes: an `aiki server` process, an `aiki worker` process, and this process as the client.

Everything between them is HTTP on 127.0.0.1; the server finds out about new work from its own
writes and from PostgreSQL LISTEN/NOTIFY. No Redis. IAM is on, as in production: the worker and
the client authenticate every request with an API key.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from aiki import client
from bench.systems import RunHandle, SystemConfig
from bench.systems.processes import Child, free_port
from bench.systems.remote_workflows_aiki import (
    SLEEP_MS,
    chain_parent,
    event_pair,
    event_resume,
    pickup,
    sleep_overshoot,
    three_tasks,
)

WORKER_TARGET = "bench.systems.remote_workflows_aiki:WORKFLOWS"
BENCH_SECRET = "bench-server-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


async def _admin_key(url: str) -> str:
    """Sign up a team on the fresh server and create an admin key of its namespace."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"email": "bench@example.com", "password": "correct horse battery staple"}
        signed = await http.post("/api/v1/auth/signup", json=body)
        signed.raise_for_status()
        namespace_id = signed.json()["namespace"]["id"]
        cookie = signed.headers["set-cookie"].split(";")[0]  # a Secure cookie over plain http: sent by hand
        made = await http.post(
            f"/api/v1/namespaces/{namespace_id}/api-keys",
            json={"name": "bench", "role": "admin"},
            headers={"cookie": cookie, "origin": url},  # a session's unsafe requests: from our origin
        )
        made.raise_for_status()
        key: str = made.json()["key"]
        return key


@dataclass
class _Handle:
    inner: Any

    async def result(self) -> int:
        output: int = await self.inner.result()
        return output


class AikiHttpSystem:
    def __init__(self, config: SystemConfig) -> None:
        self._config = config
        self._children: list[Child] = []
        self._client: Any = None

    async def start(self) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = Child(
            "aiki-server",
            ["-m", "aiki.cli", "server", "--port", str(port), "--database-url", self._config.db_url],
            {
                "AIKI_LOG_LEVEL": "WARNING",
                "AIKI_SECRET_KEY": BENCH_SECRET,
                "AIKI_BASE_URL": url,
                "AIKI_EMAIL_VERIFICATION": "off",
            },
        )
        self._children.append(server)

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{url}/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await server.wait_until(healthy)
        key = await _admin_key(url)
        worker = Child(
            "aiki-worker",
            ["-m", "aiki.cli", "worker", WORKER_TARGET, "--url", url, "--concurrency", str(self._config.concurrency)],
            {"AIKI_LOG_LEVEL": "INFO", "AIKI_API_KEY": key},
        )
        self._children.append(worker)

        async def registered() -> bool:
            return " serving " in worker.output()

        await worker.wait_until(registered)
        self._client = client(url=url, api_key=key)

    async def start_run(self, x: int) -> RunHandle:
        return _Handle(await three_tasks.start(self._client, x))

    async def pickup_once(self, x: int) -> float:
        t0 = time.time_ns()
        handle = await pickup.start(self._client, x)
        started: int = await handle.result()
        return (started - t0) / 1e9

    async def event_once(self, x: int) -> float:
        handle = await event_resume.start(self._client, x)
        view = await self._client.get_run(handle.id, wait_for=["awaiting_event"], timeout_ms=30_000)
        if view.status != "awaiting_event":
            raise RuntimeError(f"run {handle.id} is {view.status}, not awaiting its event")
        t_send = time.time_ns()
        await handle.events.go.send(x)
        resumed: int = await handle.result()
        return (resumed - t_send) / 1e9

    async def latency_once(self, x: int) -> float:
        t0 = time.perf_counter()
        handle = await three_tasks.start(self._client, x)
        if await handle.result() != x + 3:
            raise RuntimeError(f"run {handle.id} returned the wrong output")
        return time.perf_counter() - t0

    async def sleep_once(self, x: int) -> float:
        handle = await sleep_overshoot.start(self._client, x)
        before, after = await handle.result()
        return (after - before) / 1e9 - SLEEP_MS / 1000

    async def _claim_delays(self, run_id: str, *, first: bool) -> list[float]:
        """Seconds from each time the run became claimable (``queued``) to its claim, from the
        server's history; ``first``: its first queueing (its start) counts too."""
        delays = []
        queued_at: int | None = None
        for entry in await self._client.history(run_id):
            if entry.to_status == "queued":
                queued_at = entry.created_at if first or entry.from_status is not None else None
            elif entry.to_status == "running" and entry.from_status == "queued" and queued_at is not None:
                delays.append((entry.created_at - queued_at) / 1000)
                queued_at = None
        return delays

    async def event_pair_once(self, x: int) -> list[float]:
        handle = await event_pair.start(self._client, x)
        view = await self._client.get_run(handle.id, wait_for=["awaiting_event"], timeout_ms=30_000)
        if view.status != "awaiting_event":
            raise RuntimeError(f"run {handle.id} is {view.status}, not awaiting its event")
        await handle.events.first.send(x)
        await handle.events.second.send(x)
        if await handle.result() != x:
            raise RuntimeError(f"run {handle.id} returned the wrong output")
        return await self._claim_delays(handle.id, first=False)

    async def child_chain_once(self, x: int) -> list[float]:
        handle = await chain_parent.start(self._client, x)
        children: list[str] = await handle.result()
        delays = await self._claim_delays(handle.id, first=False)
        for child_id in children:
            delays += await self._claim_delays(child_id, first=True)
        return delays

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        # The worker first: a server stopping under a connected worker waits for its long-polls.
        for child in reversed(self._children):
            await asyncio.to_thread(child.stop)


def create(config: SystemConfig) -> AikiHttpSystem:
    return AikiHttpSystem(config)
