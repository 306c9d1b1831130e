"""Many processes on one PostgreSQL: ``aiki server`` replicas and ``aiki worker`` processes over HTTP.

Every process is the real CLI. Workers talk to one server each; runs are started, and events sent,
through either server, so every hand-over between a client, a server replica and a worker crosses
processes, and timers and lease checks run in every replica at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.multiproc_workflows import MANY_TASKS, PROBE_SLEEP_MS, TIMES_ENV, many_v1, probe_v1, read_stamps
from tests.e2e.procs import WorkerProcs, all_of, pg_fetch, poll_until_async
from tests.e2e.workflows import read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]

REDIS_URL = "redis://127.0.0.1:6379/0"
DUPLICATE_TASKS = """
    SELECT run_id, address, seq, count(*) AS n FROM tasks
    WHERE status <> 'discarded' GROUP BY 1, 2, 3 HAVING count(*) > 1
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("relay", ["listen", "redis"])
async def test_a_worker_on_one_server_process_serves_runs_started_on_another_at_once(
    procs: WorkerProcs, tmp_path: Path, relay: str
) -> None:
    """Server A and B are processes; the worker long-polls A; runs start and get events through B.

    ``redis``: both servers run with ``--no-pg-listen --redis-url``, so Redis alone carries wake-ups.
    """
    times = tmp_path / "times.txt"
    procs.env[TIMES_ENV] = str(times)
    options: dict[str, Any] = {"pg_listen": False, "redis_url": REDIS_URL} if relay == "redis" else {}
    a, b = await all_of([procs.start_server(**options), procs.start_server(**options)])
    await procs.start_cli_worker("tests.e2e.multiproc_workflows:PROBE", a.url, concurrency=4)
    client_b = procs.client(b)
    pickups, overshoots, resumes = [], [], []
    try:
        for i in range(5):
            t0 = time.time_ns()
            run = await probe_v1.start(client_b, f"probe-{i}")
            view = await client_b.get_run(run.id, wait_for=["awaiting_event"], timeout_ms=30_000)
            assert view.status == "awaiting_event", view
            t_send = time.time_ns()
            await run.events.go.send(None)
            async with asyncio.timeout(30):
                assert await run.result() == ["a", "b", "c"]
            stamps = read_stamps(times)
            pickups.append((stamps[(run.id, "a")] - t0) / 1e9)
            overshoots.append((stamps[(run.id, "b")] - stamps[(run.id, "a")]) / 1e9 - PROBE_SLEEP_MS / 1000)
            resumes.append((stamps[(run.id, "c")] - t_send) / 1e9)
    finally:
        await client_b.close()
    figures = {"pickup": pickups, "sleep overshoot": overshoots, "event resume": resumes}
    print({k: [round(x * 1000) for x in v] for k, v in figures.items()})
    # Without a cross-process wake-up each would take ~10 s (the long-polls' own re-check).
    for name, values in figures.items():
        assert statistics.median(values) < 0.5, (name, figures)
        assert max(values) < 2.0, (name, figures)


RUNS = 500
WORKERS = 3


async def _send_events_until_done(procs: WorkerProcs, servers: list[str], done: asyncio.Event) -> int:
    """Send ``go`` to every run awaiting it (through alternating servers) until ``done``."""
    sent: set[str] = set()
    turn = 0
    async with procs.http(timeout=30) as http:
        while not done.is_set():
            base = servers[turn % len(servers)]
            turn += 1
            resp = await http.get(
                f"{base}/api/v1/runs",
                params={"workflow": many_v1.name, "status": "awaiting_event", "limit": "500"},
            )
            assert resp.status_code == 200, resp.text
            waiting = [item["id"] for item in resp.json()["items"] if item["id"] not in sent]

            async def send(run_id: str, base: str = base) -> None:
                r = await http.post(
                    f"{base}/api/v1/runs/{run_id}/events/go",
                    json={"data": None, "reference_id": f"go-{run_id}"},
                )
                assert r.status_code in (200, 201), r.text
                sent.add(run_id)

            await all_of([send(run_id) for run_id in waiting], limit=10)
            if not waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.05)
    return len(sent)


@pytest.mark.timeout(180)
async def test_two_servers_and_three_workers_complete_500_runs_with_sleeps_and_events_exactly_once(
    procs: WorkerProcs, e2e_db_url: str, ledger: Path
) -> None:
    started = time.monotonic()
    a, b = await all_of([procs.start_server(pool_size=10), procs.start_server(pool_size=10)])
    workers = await all_of(
        procs.start_cli_worker("tests.e2e.multiproc_workflows:MANY", srv.url, concurrency=40)
        for srv in (a, b, a)[:WORKERS]
    )
    ready = time.monotonic()

    clients = [procs.client(a), procs.client(b)]
    done = asyncio.Event()
    sender = asyncio.create_task(_send_events_until_done(procs, [b.url, a.url], done))
    try:
        handles = await all_of([many_v1.start(clients[i % 2], i) for i in range(RUNS)], limit=20)

        async def statuses() -> dict[str, int]:
            rows = await pg_fetch(e2e_db_url, "SELECT status, count(*) AS n FROM runs GROUP BY status")
            return {r["status"]: r["n"] for r in rows}

        final = await poll_until_async(
            statuses,
            lambda s: s.get("completed", 0) + s.get("failed", 0) + s.get("cancelled", 0) >= RUNS,
            timeout=120,
            what=f"{RUNS} runs to finish",
            interval=0.25,
        )
    finally:
        done.set()
        events_sent = await sender
        for c in clients:
            await c.close()
    finished = time.monotonic()
    print(f"processes ready in {ready - started:.1f}s; {RUNS} runs in {finished - ready:.1f}s")
    assert final == {"completed": RUNS}, final
    assert events_sent == RUNS

    # Every process is healthy and stops cleanly on SIGTERM: the workers, then the servers.
    for group in (workers, [a.child, b.child]):
        for child in group:
            assert child.alive(), child.stderr_text()
            child.proc.send_signal(signal.SIGTERM)
        codes = await all_of(procs.wait_exit(child, timeout=20) for child in group)
        assert codes == [0] * len(group), codes

    run_ids = {h.id for h in handles}
    assert len(run_ids) == RUNS

    # Every run returned the five task outputs and completed exactly once.
    rows = await pg_fetch(e2e_db_url, "SELECT id, output FROM runs")
    assert {r["id"] for r in rows} == run_ids
    assert {json.dumps(json.loads(r["output"])) for r in rows} == {json.dumps([f"{t}-ok" for t in MANY_TASKS])}
    completions = await pg_fetch(
        e2e_db_url, "SELECT run_id, count(*) AS n FROM run_history WHERE to_status = 'completed' GROUP BY run_id"
    )
    assert len(completions) == RUNS
    assert {r["n"] for r in completions} == {1}
    # Both replicas' timer loops watched every sleep; each ended exactly once.
    woke = await pg_fetch(
        e2e_db_url,
        "SELECT run_id, count(*) AS n FROM run_history WHERE from_status = 'sleeping' GROUP BY run_id",
    )
    assert {r["run_id"]: r["n"] for r in woke} == dict.fromkeys(run_ids, 2)

    # No task result was recorded twice; each task of each run exactly once; one event per run.
    assert await pg_fetch(e2e_db_url, DUPLICATE_TASKS) == []
    rows = await pg_fetch(e2e_db_url, "SELECT name, count(*) AS n FROM tasks WHERE status = 'completed' GROUP BY name")
    assert {r["name"]: r["n"] for r in rows} == dict.fromkeys(MANY_TASKS, RUNS)
    rows = await pg_fetch(e2e_db_url, "SELECT run_id, count(*) AS n FROM events GROUP BY run_id")
    assert {r["run_id"]: r["n"] for r in rows} == dict.fromkeys(run_ids, 1)
    rows = await pg_fetch(e2e_db_url, "SELECT status, count(*) AS n FROM sleeps GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"completed": 2 * RUNS}

    # No live worker lost a lease (30 s, heartbeats every 10 s), so each task handler ran exactly
    # once. (A stale heartbeat answer once cancelled a run's newer execution here, and a task re-ran.)
    recovered = await pg_fetch(e2e_db_url, "SELECT id, recoveries FROM runs WHERE recoveries > 0")
    assert recovered == [], recovered
    lines = read_ledger(ledger)
    counts = Counter((line.run_id, line.task, line.event) for line in lines)
    expected = {(run_id, t, e): 1 for run_id in run_ids for t in MANY_TASKS for e in ("start", "done")}
    assert dict(counts) == expected, sorted(k for k, n in counts.items() if n != 1)[:20]
    # ...and every worker process served some of them.
    per_pid = Counter(line.pid for line in lines if line.event == "done")
    assert set(per_pid) == {w.pid for w in workers}, per_pid
