"""Leases of a healthy worker process stay alive while one of its runs is slow to write.

A heartbeat extends the leases of every run a worker holds. One run's row being locked for a
while (a slow transaction on it: a task being recorded by a starved process, a cancel...) must not
stop the heartbeat from extending the *other* runs' leases; otherwise runs of a live worker are
recovered and their tasks run twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.procs import WorkerProcs, observer, pg_fetch, poll_until
from tests.e2e.workflows import five_steps_v1, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]


async def test_one_locked_run_row_does_not_stop_heartbeats_of_the_other_runs(
    e2e_db_url: str, procs: WorkerProcs, ledger: Path
) -> None:
    lease_ttl = 1.5
    async with asyncio.timeout(60), observer(e2e_db_url, lease_ttl=lease_ttl) as obs:
        # Every run blocks in step-2 (its execution stays in flight; only heartbeats hold its lease).
        held = procs.start(workflows="five", lease_ttl=lease_ttl, block_task="step-2", concurrency=10)
        await procs.wait_ready(held)
        run_ids = sorted([(await five_steps_v1.start(obs.client, f"held-{i}")).id for i in range(6)])

        def all_in_step2() -> bool:
            started = {x.run_id for x in read_ledger(ledger) if (x.task, x.event) == ("step-2", "start")}
            return started >= set(run_ids)

        await poll_until(all_in_step2, timeout=30, what="every run to block in step-2")
        # Heartbeats have been keeping the leases alive so far.
        await asyncio.sleep(lease_ttl * 1.5)
        before = await pg_fetch(e2e_db_url, "SELECT id, recoveries FROM runs WHERE id = ANY($1)", run_ids)
        assert {r["id"]: r["recoveries"] for r in before} == dict.fromkeys(run_ids, 0)

        # Hold the row lock of the first run (the one a multi-row update visits first) for 3 leases.
        locked, others = run_ids[0], run_ids[1:]
        conn = await asyncpg.connect(e2e_db_url)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SELECT id FROM runs WHERE id = $1 FOR UPDATE", locked)
            await asyncio.sleep(lease_ttl * 3)
            during = await pg_fetch(e2e_db_url, "SELECT id, status, recoveries FROM runs WHERE id = ANY($1)", others)
            await tx.rollback()
        finally:
            await conn.close()

    assert held.alive(), held.stderr_text()
    recovered = {r["id"]: (r["status"], r["recoveries"]) for r in during if r["recoveries"] != 0}
    assert recovered == {}, (
        f"{len(recovered)} of {len(others)} runs of a live, heartbeating worker lost their lease while "
        f"one other run's row ({locked}) was locked: {recovered}"
    )
