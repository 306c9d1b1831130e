"""PostgreSQL restarting or down under a running ``aiki server``: 503 with ``Retry-After``, never 500.

The test makes its own cluster (``scratch_cluster``), runs ``aiki server`` on it and keeps
requests going on every kind of route (API starts and lists, worker protocol claims and
heartbeats, a dashboard page) while it restarts the cluster, then stops it and starts it again.
Every answer must be a 2xx or a 503 with ``Retry-After``; each kind of request must succeed again
after each outage. An ``aiki worker`` started while the database is down keeps retrying its
registration (the server answers 503), registers once the database is back, and completes a run.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import WorkerProcs, poll_until
from tests.e2e.scratch_cluster import cluster_with_procs
from tests.e2e.workflows import five_steps_v1

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(240)]

KINDS = ("start", "list", "claim", "heartbeat", "dashboard")
TARGET = "tests.e2e.workflows:five_steps_v1"


class Load:
    """Requests of every kind in a loop; remembers each answer (status, Retry-After) by kind."""

    def __init__(self, send: dict[str, Callable[[int], Awaitable[httpx.Response]]]) -> None:
        self._send = send
        self.answers: dict[str, list[tuple[int, str | None, str]]] = defaultdict(list)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(kind)) for kind in KINDS]

    async def _loop(self, kind: str) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            resp = await self._send[kind](i)
            self.answers[kind].append((resp.status_code, resp.headers.get("retry-after"), resp.text[:300]))
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def marks(self) -> dict[str, int]:
        return {kind: len(self.answers[kind]) for kind in KINDS}

    async def each_kind(self, since: dict[str, int], ok: Callable[[int], bool], what: str) -> None:
        """Wait until every kind got an answer ``ok`` after the marks ``since``."""

        def seen() -> bool:
            for t in self._tasks:
                if t.done():
                    t.result()  # a request raised (e.g. the server went away): fail with it
            return all(any(ok(a[0]) for a in self.answers[kind][since[kind] :]) for kind in KINDS)

        await poll_until(seen, timeout=60, what=what)

    def bad(self) -> list[tuple[str, int, str | None, str]]:
        return [
            (kind, status, retry_after, text)
            for kind in KINDS
            for status, retry_after, text in self.answers[kind]
            if not (200 <= status < 300 or (status == 503 and retry_after))
        ]


async def test_postgres_restarts_answer_503_with_retry_after_and_recover(tmp_path: Path) -> None:
    async with cluster_with_procs(tmp_path) as (cluster, procs):
        await _exercise(procs, cluster)


async def _exercise(procs: WorkerProcs, cluster: object) -> None:
    from tests.e2e.scratch_cluster import ScratchCluster

    assert isinstance(cluster, ScratchCluster)
    srv = await procs.start_server(pool_size=6)
    # The dashboard is for people: its requests carry the session cookie and no API key.
    async with procs.http(base_url=srv.url, timeout=30) as http, httpx.AsyncClient(base_url=srv.url, timeout=30) as web:
        spec = {"workflow": "e2e-five-steps", "version": "1.0.0"}
        reg = {"worker_id": "restart-probe", "host": "t", "versions": [spec]}
        assert (await http.post("/api/v1/workers/register", json=reg)).status_code == 200
        credentials = {"email": "e2e@example.com", "password": "correct horse battery staple"}
        login = await web.post("/api/v1/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].split(";")[0]
        home = await web.get("/ui/home", headers={"cookie": cookie})
        assert home.status_code in (302, 303), (home.status_code, home.text[:300])
        page = home.headers["location"]
        assert (await web.get(page, headers={"cookie": cookie})).status_code == 200

        async def start(i: int) -> httpx.Response:
            return await http.post("/api/v1/runs", json={**spec, "input": f"load-{i}"})

        async def claim(_: int) -> httpx.Response:
            body = {"worker_id": "restart-probe", "versions": [["e2e-five-steps", "1.0.0"]], "max_runs": 0}
            return await http.post("/api/v1/workers/claim", json=body)

        send: dict[str, Callable[[int], Awaitable[httpx.Response]]] = {
            "start": start,
            "list": lambda _: http.get("/api/v1/runs", params={"limit": "5"}),
            "claim": claim,
            "heartbeat": lambda _: http.post("/api/v1/workers/heartbeat", json={"worker_id": "restart-probe"}),
            "dashboard": lambda _: web.get(page, headers={"cookie": cookie}),
        }
        load = Load(send)
        load.start()
        try:
            await load.each_kind(load.marks(), lambda s: 200 <= s < 300, "every kind of request to succeed")

            # 1. A restart: sessions are cut (AdminShutdownError), then refused while it comes back.
            mark = load.marks()
            await asyncio.to_thread(cluster.restart)
            await load.each_kind(mark, lambda s: 200 <= s < 300, "recovery after the restart")

            # 2. Down for a while: every request is refused, a worker starting now cannot register.
            mark = load.marks()
            await asyncio.to_thread(cluster.stop)
            await load.each_kind(mark, lambda s: s == 503, "503s while the database is down")
            argv = ["-m", "aiki.cli", "worker", TARGET, "--url", srv.url, "--concurrency", "2"]
            wk = procs.spawn("worker-during-outage", argv, env={"AIKI_LOG_LEVEL": "INFO"})

            def retrying() -> bool:
                assert wk.alive(), wk.stderr_text()
                return "cannot register yet" in wk.stderr_text()

            await poll_until(retrying, timeout=30, what="the worker to retry its registration")
            mark = load.marks()
            await asyncio.to_thread(cluster.start)
            await load.each_kind(mark, lambda s: 200 <= s < 300, "recovery after the database came back")
        finally:
            await load.stop()

        bad = load.bad()
        assert bad == [], f"{len(bad)} answers neither 2xx nor 503 with Retry-After, e.g. {bad[:5]}"
        assert any(s == 503 for a in load.answers.values() for s, _, _ in a)

        await poll_until(lambda: " serving " in wk.stderr_text(), timeout=60, what="the worker to register")
        async with procs.client(srv) as aiki:
            handle = await five_steps_v1.start(aiki, "after-the-outage")
            async with asyncio.timeout(60):
                assert len(await handle.result()) == 5
