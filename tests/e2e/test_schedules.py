"""Schedules under concurrent server replicas on one PostgreSQL: each occurrence fires exactly once.

Two kinds of race: two independent ``Services`` (separate connection pools) calling ``fire_due``
concurrently on the same fake times, and two server processes whose runtimes' schedule loops
run on fast fake clocks (slightly apart, as real clocks are).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiki import client
from aiki.api.server import AikiServer
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.schedules import run_reference
from aiki.platform.domain.settings import Settings
from aiki.platform.services.schedules import activate_schedule, fire_due
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk._worker_connection import connect
from tests.e2e.procs import REPO_ROOT, pg_fetch, poll_until, poll_until_async

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

NS = DEFAULT_NAMESPACE_ID
T0 = 1_893_456_000_000  # 2030-01-01T00:00:00Z
OCCURRENCES = 50


@contextlib.asynccontextmanager
async def replica(db_url: str) -> AsyncIterator[AikiServer]:
    """A server replica with its own connection pool (its runtime is not started)."""
    aiki_server = AikiServer(Database(db_url, migrate=False, pool_size=5), Settings())
    try:
        yield aiki_server
    finally:
        await aiki_server.db.dispose()


async def register(aiki_server: AikiServer, workflow: str) -> None:
    async with client(handler=aiki_server.handler) as c:
        await connect(c).register_worker(
            p.RegisterWorkerRequest(
                worker_id=f"registrar-{workflow}", host="test", versions=[p.VersionSpec(workflow=workflow, version="1")]
            )
        )


async def activate(aiki_server: AikiServer, workflow: str, overlap: str, every_ms: int = 1000) -> str:
    request = p.ActivateScheduleRequest(
        workflow=workflow,
        version="1",
        input={"w": workflow},
        every_ms=every_ms,
        overlap=overlap,  # type: ignore[arg-type]
    )
    response = await activate_schedule(aiki_server.services, NS, request, now=T0)
    return response.schedule.id


async def runs_of(db_url: str, schedule_id: str) -> list[dict[str, object]]:
    rows = await pg_fetch(
        db_url,
        "SELECT id, reference_id, status FROM runs WHERE reference_id LIKE $1 ORDER BY reference_id",
        f"schedule:{schedule_id}:%",
    )
    return [dict(r) for r in rows]


def expected_references(schedule_id: str, n: int, every_ms: int = 1000) -> list[str]:
    return sorted(run_reference(schedule_id, T0 + k * every_ms) for k in range(1, n + 1))


async def test_two_replicas_racing_fire_due_start_exactly_one_run_per_occurrence(e2e_db_url: str) -> None:
    async with replica(e2e_db_url) as a, replica(e2e_db_url) as b:
        for name in ("race-allow", "race-skip", "race-cancel"):
            await register(a, name)
        allow = await activate(a, "race-allow", "allow")
        skip = await activate(a, "race-skip", "skip")
        cancel = await activate(b, "race-cancel", "cancel_previous")
        # Step through 50 occurrences; at each step both replicas fire three times concurrently,
        # one of them reading a clock 300 ms ahead.
        for k in range(1, OCCURRENCES + 1):
            now = T0 + k * 1000
            calls = [fire_due(a.services, now) for _ in range(3)]
            calls += [fire_due(b.services, now + 300) for _ in range(3)]
            started = await asyncio.gather(*calls)
            assert sum(started) >= 1  # every step starts something ("allow" fires every occurrence)
        allow_runs = await runs_of(e2e_db_url, allow)
        assert [r["reference_id"] for r in allow_runs] == expected_references(allow, OCCURRENCES)

        # Downtime of 50 more occurrences, then both replicas catch up at once, concurrently.
        end = T0 + 2 * OCCURRENCES * 1000
        await asyncio.gather(*[fire_due(s.services, end) for s in (a, b, a, b)])

    allow_runs = await runs_of(e2e_db_url, allow)
    assert [r["reference_id"] for r in allow_runs] == expected_references(allow, 2 * OCCURRENCES)

    # Nothing executes these runs: the first one stays live, so "skip" never starts another.
    assert [r["reference_id"] for r in await runs_of(e2e_db_url, skip)] == expected_references(skip, 1)

    # One run per stepped occurrence, then only the latest of the missed ones; one left live.
    cancel_runs = await runs_of(e2e_db_url, cancel)
    expected = sorted([*expected_references(cancel, OCCURRENCES), run_reference(cancel, end)])
    assert [r["reference_id"] for r in cancel_runs] == expected
    live = [r["reference_id"] for r in cancel_runs if r["status"] == "queued"]
    assert live == [run_reference(cancel, end)]
    assert all(r["status"] == "cancelled" for r in cancel_runs if r["reference_id"] not in live)


def _start_server_proc(
    db_url: str, tmp_path: Path, name: str, *, end_ms: int, lag: float, speed: float
) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    ready, done, log = (tmp_path / f"{name}.{suffix}" for suffix in ("ready", "done", "log"))
    argv = [
        sys.executable,
        "-m",
        "tests.e2e.schedule_proc",
        "--db-url",
        db_url,
        "--ready-file",
        str(ready),
        "--done-file",
        str(done),
        "--start-ms",
        str(T0),
        "--end-ms",
        str(end_ms),
        "--go-file",
        str(tmp_path / "go"),
        "--lag",
        str(lag),
        "--speed",
        str(speed),
        "--parent-pid",
        str(os.getpid()),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    return proc, ready, done, log


async def test_two_server_processes_fire_each_occurrence_once(e2e_db_url: str, tmp_path: Path) -> None:
    end_ms = T0 + OCCURRENCES * 1000 + 500
    procs: list[tuple[subprocess.Popen[bytes], Path, Path, Path]] = []
    try:
        async with replica(e2e_db_url) as setup:
            for name in ("procs-allow", "procs-cancel"):
                await register(setup, name)
            allow = await activate(setup, "procs-allow", "allow")
            cancel = await activate(setup, "procs-cancel", "cancel_previous")
        # Both clocks run 20x real time: 50 one-second occurrences in ~2.5 s. The second process
        # starts its clock 40 ms later: the replicas' clocks disagree a little.
        for i, name in enumerate(("server1", "server2")):
            procs.append(_start_server_proc(e2e_db_url, tmp_path, name, end_ms=end_ms, lag=i * 0.04, speed=20))

        def all_are(what: str) -> bool:
            for proc, ready, done, log in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"server process exited early:\n{log.read_text(errors='replace')}")
                if not (ready if what == "ready" else done).exists():
                    return False
            return True

        # The clocks start once both runtimes run, however long the processes took to start.
        await poll_until(lambda: all_are("ready"), timeout=90, what="both server processes to start")
        (tmp_path / "go").write_text(str(time.time() + 0.2))
        await poll_until(lambda: all_are("done"), timeout=90, what="both processes to reach the end of their clocks")
        # A process's last pass skips a schedule the other one holds (SKIP LOCKED) and may finish
        # first: the end of time is reached once no schedule has an occurrence up to it unfired.
        await poll_until_async(
            lambda: pg_fetch(e2e_db_url, "SELECT id FROM schedules WHERE next_fire_at <= $1", end_ms),
            lambda due: not due,
            timeout=90,
            what="every occurrence up to the end to be fired",
        )
        allow_runs = await runs_of(e2e_db_url, allow)
        cancel_runs = await runs_of(e2e_db_url, cancel)
    finally:
        for proc, *_ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, *_ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for _, _, _, log in procs:
            print(f"===== {log.name} =====\n{log.read_text(errors='replace')[-5000:]}")

    assert [r["reference_id"] for r in allow_runs] == expected_references(allow, OCCURRENCES)
    # "cancel_previous" catches up only the latest due occurrence, so a loop that fell behind the
    # fast clock may pass over some; what must hold is one run per occurrence it fired, the last
    # occurrence fired, and exactly one run left live.
    references = [r["reference_id"] for r in cancel_runs]
    assert set(references) <= set(expected_references(cancel, OCCURRENCES))
    assert references[-1] == run_reference(cancel, T0 + OCCURRENCES * 1000)
    assert [r["status"] for r in cancel_runs].count("queued") == 1
    assert [r["status"] for r in cancel_runs].count("cancelled") == len(cancel_runs) - 1
