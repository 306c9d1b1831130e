"""``aiki worker`` processes: started before their server, stopped with SIGTERM, refused a key.

* A worker started while its server is down keeps trying to register, registers once the server
  is up and completes a run.
* SIGTERM: the worker hands back the run it is executing, and another worker claims it at once
  (the lease TTL is two minutes, longer than the test may take: expiry cannot be what frees it).
* A bad key stops the worker with one line on stderr, a non-zero status, no traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.procs import REPO_ROOT, ServerChild, WorkerProcs, pg_fetch, poll_until
from tests.e2e.workflows import BLOCK_ENV, five_steps_v1, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

TARGET = "tests.e2e.workflows:five_steps_v1"
LONG_LEASE_S = 120


async def _start_server_on(procs: WorkerProcs, port: int, env: dict[str, str] | None = None) -> ServerChild:
    """``aiki server`` on ``port`` (a port a previous server of this test used)."""
    from tests.e2e.procs import SERVER_SECRET

    argv = ["-m", "aiki.cli", "server", "--port", str(port), "--database-url", procs.db_url, "--pool-size", "5"]
    extra = {
        "AIKI_SECRET_KEY": SERVER_SECRET,
        "AIKI_BASE_URL": f"http://127.0.0.1:{port}",
        "AIKI_EMAIL_VERIFICATION": "off",
        **(env or {}),
    }
    srv = ServerChild(procs.spawn(f"server-on-{port}", argv, env=extra), port)
    assert await procs._wait_http(srv, 30), srv.child.stderr_text()
    return srv


async def test_a_worker_started_before_its_server_registers_once_it_is_up(procs: WorkerProcs) -> None:
    first = await procs.start_server()  # provisions the API key every later process uses
    first.child.proc.send_signal(signal.SIGTERM)
    assert await procs.wait_exit(first.child, timeout=30) == 0

    # The server is down: the worker keeps trying, it does not exit.
    argv = ["-m", "aiki.cli", "worker", TARGET, "--url", first.url, "--concurrency", "2"]
    wk = procs.spawn("early-worker", argv, env={"AIKI_LOG_LEVEL": "INFO"})

    def retrying() -> bool:
        assert wk.alive(), wk.stderr_text()
        return "cannot register yet" in wk.stderr_text()

    await poll_until(retrying, timeout=30, what="the worker to retry its registration")

    srv = await _start_server_on(procs, first.port)
    await poll_until(lambda: " serving " in wk.stderr_text(), timeout=30, what="the worker to register")
    async with procs.client(srv) as aiki:
        handle = await five_steps_v1.start(aiki, "early")
        async with asyncio.timeout(60):
            assert len(await handle.result()) == 5
    assert wk.alive()


async def test_sigterm_hands_the_running_run_to_another_worker_at_once(
    procs: WorkerProcs, ledger: Path, e2e_db_url: str
) -> None:
    srv = await procs.start_server(env={"AIKI_LEASE_TTL": str(LONG_LEASE_S)})
    # A blocks in step-2 and is given 1 s to finish on SIGTERM (it will not).
    a = await procs.start_cli_worker(
        TARGET, srv.url, concurrency=1, env={BLOCK_ENV: "step-2", "AIKI_SHUTDOWN_GRACE": "1"}
    )
    async with procs.client(srv) as aiki:
        handle = await five_steps_v1.start(aiki, "sigterm")

        def a_blocks() -> bool:
            return any((x.task, x.event, x.pid) == ("step-2", "start", a.pid) for x in read_ledger(ledger))

        await poll_until(a_blocks, timeout=30, what="worker A to block in step-2")
        b = await procs.start_cli_worker(TARGET, srv.url, concurrency=1)
        a.proc.send_signal(signal.SIGTERM)

        async with asyncio.timeout(LONG_LEASE_S / 2):
            assert len(await handle.result()) == 5
        assert await procs.wait_exit(a, timeout=30) == 0, a.stderr_text()

    done_by_b = {x.task for x in read_ledger(ledger) if x.event == "done" and x.pid == b.pid}
    assert {"step-2", "step-5"} <= done_by_b
    [row] = await pg_fetch(e2e_db_url, "SELECT recoveries FROM runs WHERE id = $1", handle.id)
    assert row["recoveries"] == 0
    reasons = [r["reason"] for r in await pg_fetch(e2e_db_url, "SELECT reason FROM run_history")]
    assert any(r and r.startswith("released by ") for r in reasons), reasons


@pytest.mark.parametrize("key", ["aiki_sk_not_a_real_key_0123456789", "garbage"])
async def test_a_bad_key_stops_the_worker_with_one_line(procs: WorkerProcs, key: str) -> None:
    srv = await procs.start_server()
    env = {**procs.env, "AIKI_API_KEY": key, "AIKI_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO_ROOT)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "aiki.cli", "worker", TARGET, "--url", srv.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr
    assert "refused to register" in lines[0]


async def test_worker_options_are_checked_naming_them(procs: WorkerProcs) -> None:
    del procs  # only its database fixture: nothing is started
    for args, env, named in [
        (["--heartbeat-interval", "0"], {}, "--heartbeat-interval"),
        ([], {"AIKI_HEARTBEAT_INTERVAL": "soon"}, "AIKI_HEARTBEAT_INTERVAL"),
        ([], {"AIKI_SHUTDOWN_GRACE": "-1"}, "AIKI_SHUTDOWN_GRACE"),
        (["--url", "localhost:9850"], {}, "--url"),
    ]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("AIKI_")}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aiki.cli", "worker", TARGET, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env={**full, **env},
            check=False,
        )
        assert done.returncode == 2, (args, env, done.stderr)
        assert named in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
