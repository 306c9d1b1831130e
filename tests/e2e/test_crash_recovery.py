"""Crash recovery with real processes on PostgreSQL: SIGKILL mid-task, and a poison pill.

Each test runs worker processes (``tests/e2e/worker_proc.py``: embedded server + worker) on its
own database; the test process holds a server of its own (no worker) to start runs and watch
them. Tasks append to a ledger file, so the test sees which task ran in which process, how often.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from tests.e2e.procs import Child, WorkerProcs, all_of, observer, pg_fetch, poll_until
from tests.e2e.workflows import five_steps_v1, poison_pill_v1, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]

STEP_NAMES = [f"step-{i}" for i in range(1, 6)]


async def test_task_interrupted_by_sigkill_is_rerun_by_another_process(
    e2e_db_url: str, procs: WorkerProcs, ledger: Path
) -> None:
    lease_ttl = 1.5
    async with asyncio.timeout(60), observer(e2e_db_url, lease_ttl=lease_ttl) as obs:
        first = procs.start(workflows="five", lease_ttl=lease_ttl, block_task="step-3")
        await procs.wait_ready(first)
        handle = await five_steps_v1.start(obs.client, "crash-me")
        run_id = handle.id

        def step3_started() -> bool:
            return any(
                (line.run_id, line.task, line.event) == (run_id, "step-3", "start") for line in read_ledger(ledger)
            )

        await poll_until(step3_started, timeout=30, what="step-3 to start in the first worker")
        os.kill(first.pid, signal.SIGKILL)
        assert await procs.wait_exit(first, timeout=10) == -signal.SIGKILL

        # The second process does not block: it picks the run up once the first lease expires.
        second = procs.start(workflows="five", lease_ttl=lease_ttl)
        view = await handle.wait_for_status("completed", timeout=timedelta(seconds=40))
        result = await handle.result()
        body = await obs.run_json(run_id)
        history = await obs.history(run_id)

    assert result == [f"{name}-ok" for name in STEP_NAMES]
    assert view.recoveries == 1
    assert body["status"] == "completed"
    assert body["recoveries"] == 1

    lines = [line for line in read_ledger(ledger) if line.run_id == run_id]
    counts = Counter((line.task, line.event) for line in lines)
    pids = {(line.task, line.event): [x.pid for x in lines if (x.task, x.event) == (line.task, line.event)]
            for line in lines}  # fmt: skip
    # Tasks 1-2 completed before the crash: they ran exactly once, in the first process.
    for name in ("step-1", "step-2"):
        assert counts[(name, "start")] == 1, lines
        assert counts[(name, "done")] == 1, lines
        assert pids[(name, "done")] == [first.pid]
    # Task 3 was interrupted: it started in both processes and completed once, in the second.
    assert counts[("step-3", "start")] == 2, lines
    assert pids[("step-3", "start")] == [first.pid, second.pid]
    assert counts[("step-3", "done")] == 1, lines
    assert pids[("step-3", "done")] == [second.pid]
    # Tasks 4-5 ran once, after the recovery.
    for name in ("step-4", "step-5"):
        assert counts[(name, "start")] == 1, lines
        assert counts[(name, "done")] == 1, lines
        assert pids[(name, "done")] == [second.pid]
    # The ledger is in execution order.
    assert [(line.task, line.event) for line in lines] == [
        ("step-1", "start"), ("step-1", "done"),
        ("step-2", "start"), ("step-2", "done"),
        ("step-3", "start"),
        ("step-3", "start"), ("step-3", "done"),
        ("step-4", "start"), ("step-4", "done"),
        ("step-5", "start"), ("step-5", "done"),
    ]  # fmt: skip

    # One lease expiry brought the run back to the queue; it completed once.
    transitions = [(h["from_status"], h["to_status"]) for h in history]
    assert transitions.count(("running", "queued")) == 1, history
    assert [h for h in history if h["to_status"] == "completed"] == [history[-1]], history

    rows = await pg_fetch(
        e2e_db_url, "SELECT name, status FROM tasks WHERE run_id = $1 AND status <> 'discarded'", run_id
    )
    assert sorted((r["name"], r["status"]) for r in rows) == [(name, "completed") for name in STEP_NAMES]


async def _keep_a_worker_alive(procs: WorkerProcs, started: list[Child], max_starts: int, **options: object) -> None:
    """Supervisor: whenever the current worker process dies, start another (at most ``max_starts``)."""
    while True:
        if not started or not started[-1].alive():
            if len(started) >= max_starts:
                raise AssertionError(f"started {max_starts} worker processes and the runs are still live")
            started.append(procs.start(**options))  # type: ignore[arg-type]
        await asyncio.sleep(0.02)


async def test_poison_pill_fails_with_recovery_exhausted_and_spares_other_runs(
    e2e_db_url: str, procs: WorkerProcs, ledger: Path
) -> None:
    """A run whose task SIGKILLs its worker process every time fails after max_recoveries recoveries.

    Worker processes serving the pill (and the bystanders' workflow) are restarted by a supervisor
    whenever they die; a second, healthy process serves only the bystanders' workflow. Bystanders
    claimed by a dying process are collateral (their lease expires with the pill's); they must
    still complete, and the healthy process must never be disturbed.
    """
    lease_ttl, max_recoveries = 1.0, 2
    started: list[Child] = []
    async with (
        asyncio.timeout(75),
        observer(e2e_db_url, lease_ttl=lease_ttl, max_recoveries=max_recoveries) as obs,
    ):
        healthy = procs.start(workflows="five", lease_ttl=lease_ttl, max_recoveries=max_recoveries)
        supervisor = asyncio.create_task(
            _keep_a_worker_alive(
                procs,
                started,
                max_starts=8,
                workflows="poison,five",
                lease_ttl=lease_ttl,
                max_recoveries=max_recoveries,
            )
        )
        try:
            await poll_until(lambda: bool(started), timeout=5, what="the first worker process")
            await all_of([procs.wait_ready(healthy), procs.wait_ready(started[0])])
            pill = await poison_pill_v1.start(obs.client, "pill")
            others = [await five_steps_v1.start(obs.client, f"bystander-{i}") for i in range(5)]

            waits = asyncio.create_task(
                all_of(
                    [
                        pill.wait_for_status("failed", timeout=timedelta(seconds=50)),
                        *(h.wait_for_status("completed", timeout=timedelta(seconds=50)) for h in others),
                    ]
                )
            )
            try:
                await asyncio.wait({waits, supervisor}, return_when=asyncio.FIRST_COMPLETED)
                if supervisor.done():
                    supervisor.result()  # raises why the supervisor gave up
                pill_view, *other_views = await waits
            finally:
                waits.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waits
            outputs = [await h.result() for h in others]
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        body = await obs.run_json(pill.id)
        history = await obs.history(pill.id)

        # The healthy process was never disturbed, and stops cleanly on SIGTERM.
        assert healthy.alive(), healthy.stderr_text()
        healthy.proc.send_signal(signal.SIGTERM)
        assert await procs.wait_exit(healthy, timeout=15) == 0, healthy.stderr_text()

    assert pill_view.status == "failed"
    assert body["status"] == "failed"
    error = body["error"]
    assert error is not None
    assert "recovery_exhausted" in (error.get("cause"), error.get("type"), error.get("code")), error
    assert history[-1]["to_status"] == "failed", history

    # It crashed its worker max_recoveries + 1 times: the first time, then once after each recovery.
    poison_starts = [line for line in read_ledger(ledger) if line.run_id == pill.id and line.task == "poison"]
    assert len(poison_starts) == max_recoveries + 1, poison_starts
    assert len({line.pid for line in poison_starts}) == max_recoveries + 1  # each in another process
    # Every worker process that died was killed by the pill (none crashed for another reason).
    dead = [child for child in started if not child.alive()]
    assert len(dead) >= max_recoveries + 1
    assert all(child.proc.returncode == -signal.SIGKILL for child in dead), [(c.name, c.proc.returncode) for c in dead]

    # The other runs were not affected: all completed with their full result.
    assert [view.status for view in other_views] == ["completed"] * len(others)
    assert outputs == [[f"{name}-ok" for name in STEP_NAMES]] * len(others)
