"""Two worker processes on one PostgreSQL database share the work without doing anything twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from aiki import worker
from tests.e2e.procs import WorkerProcs, all_of, observer, pg_fetch
from tests.e2e.workflows import LEDGER_ENV, read_ledger, three_steps_v1

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]

RUNS = 200
TASKS = ["step-1", "step-2", "step-3"]
DUPLICATE_TASKS = """
    SELECT run_id, address, seq, count(*) AS n FROM tasks
    WHERE status <> 'discarded' GROUP BY 1, 2, 3 HAVING count(*) > 1
"""


async def test_two_worker_processes_complete_200_runs_exactly_once(
    e2e_db_url: str, procs: WorkerProcs, ledger: Path
) -> None:
    lease_ttl = 10.0  # no crash here: a long lease keeps a loaded machine from expiring one
    async with asyncio.timeout(90), observer(e2e_db_url, lease_ttl=lease_ttl, pool_size=8) as obs:
        workers = [
            procs.start(
                workflows="three",
                lease_ttl=lease_ttl,
                concurrency=20,
                pool_size=8,
                fsync=False,
                log_level="INFO",
                log_http=True,
            )
            for _ in range(2)
        ]
        await all_of(procs.wait_ready(w) for w in workers)

        handles = await all_of([three_steps_v1.start(obs.client, f"run-{i}") for i in range(RUNS)], limit=20)
        views = await all_of(h.wait_for_status("completed", timeout=timedelta(seconds=60)) for h in handles)
        outputs = await all_of([h.result() for h in handles], limit=20)
        histories = await all_of([obs.history(h.id) for h in handles], limit=20)
        listed = await obs.http.get(
            "/api/v1/runs", params={"limit": "500", "status": "completed", "workflow": three_steps_v1.name}
        )

        # Both processes are still healthy and stop cleanly on SIGTERM.
        for w in workers:
            assert w.alive(), w.stderr_text()
            w.proc.send_signal(signal.SIGTERM)
        codes = await all_of(procs.wait_exit(w, timeout=15) for w in workers)
        assert codes == [0, 0], [w.stderr_text() for w in workers]

    run_ids = {h.id for h in handles}
    assert len(run_ids) == RUNS
    assert all(v.status == "completed" for v in views)
    assert outputs == [[f"{t}-ok" for t in TASKS]] * RUNS

    # Each run completed exactly once: one transition to `completed` in its history.
    for handle, history in zip(handles, histories, strict=True):
        completed = [h for h in history if h["to_status"] == "completed"]
        assert len(completed) == 1, (handle.id, history)
        assert history[-1]["to_status"] == "completed", (handle.id, history)

    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert {item["id"] for item in page["items"]} == run_ids
    assert page.get("next_cursor") is None

    # No task result was recorded twice, and every task was recorded exactly once.
    assert await pg_fetch(e2e_db_url, DUPLICATE_TASKS) == []
    rows = await pg_fetch(e2e_db_url, "SELECT name, count(*) AS n FROM tasks WHERE status = 'completed' GROUP BY name")
    assert {r["name"]: r["n"] for r in rows} == dict.fromkeys(TASKS, RUNS)

    # Every task ran exactly once (no crash, so no re-execution), and both processes did work.
    lines = read_ledger(ledger)
    counts = Counter((line.run_id, line.task, line.event) for line in lines)
    expected = {(run_id, t, e): 1 for run_id in run_ids for t in TASKS for e in ("start", "done")}
    if dict(counts) != expected:
        history_by_run = {h.id: history for h, history in zip(handles, histories, strict=True)}
        odd = sorted({run_id for (run_id, _, _), n in counts.items() if n != 1} | (run_ids - {k[0] for k in counts}))
        details = []
        for run_id in odd:
            task_rows = await pg_fetch(
                e2e_db_url,
                "SELECT name, seq, status, attempts, created_at, updated_at FROM tasks WHERE run_id = $1 "
                "ORDER BY created_at",
                run_id,
            )
            details.append(
                f"run {run_id}:\n  ledger: {[(x.task, x.event, x.pid) for x in lines if x.run_id == run_id]}"
                f"\n  history: {history_by_run.get(run_id)}\n  tasks: {[dict(r) for r in task_rows]}"
            )
        pytest.fail(f"{len(odd)} run(s) executed a task other than exactly once:\n" + "\n".join(details))
    per_pid = Counter(line.pid for line in lines if line.event == "done")
    assert set(per_pid) == {w.pid for w in workers}, per_pid


async def test_tasks_unique_index_rejects_a_second_live_entry(
    e2e_db_url: str, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database itself refuses a second live row for one (run, address, seq)."""
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    async with asyncio.timeout(60), observer(e2e_db_url, lease_ttl=10.0) as obs:
        handle = await worker(workflows=[three_steps_v1], concurrency=2).spawn(obs.client)
        try:
            run = await three_steps_v1.start(obs.client, "one")
            await run.wait_for_status("completed", timeout=timedelta(seconds=30))
        finally:
            await handle.stop(grace=timedelta(seconds=2))

    conn = await asyncpg.connect(e2e_db_url)
    try:
        indexes = await conn.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks'")
        assert any("UNIQUE" in r["indexdef"] and "(run_id, address, seq)" in r["indexdef"] for r in indexes), indexes

        row = dict(await conn.fetchrow("SELECT * FROM tasks WHERE run_id = $1 LIMIT 1", run.id))
        columns = list(row)
        insert = (
            f"INSERT INTO tasks ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})"
        )

        def copy_of(status: str, suffix: str) -> list[Any]:
            values = {**row, "id": f"{row['id'][:-4]}{suffix}", "status": status}
            return [values[c] for c in columns]

        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, *copy_of("completed", "dup1"))
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, *copy_of("failed", "dup2"))
        # Discarded entries (from a failed workflow attempt) step aside: they may repeat the key.
        await conn.execute(insert, *copy_of("discarded", "dis1"))
        await conn.execute(insert, *copy_of("discarded", "dis2"))
        live = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE run_id = $1 AND address = $2 AND seq = $3 AND status <> 'discarded'",
            row["run_id"],
            row["address"],
            row["seq"],
        )
        assert live == 1
    finally:
        await conn.close()
