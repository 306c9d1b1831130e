"""Two guarantees under duress, with real ``aiki server`` and ``aiki worker`` processes on the chaos cluster.

* 50 reference ids, each started 20 times at once from several processes through two servers:
  exactly 50 runs, and every answer for one reference names the same run.
* A poison pill, a task that SIGKILLs its worker every time: its run fails with
  ``recovery_exhausted`` after ``max_recoveries`` recoveries, and the other runs complete.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.chaos.harness import Fleet, pg_fetch, report, start_fleet
from tests.chaos.workload import pill_v1, plain_v1, read_ledger
from tests.e2e.procs import WorkerProcs, all_of, poll_until, poll_until_async

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(240)]

REFS, PROCESSES, COPIES = 50, 4, 5  # 4 processes x 5 copies = 20 concurrent starts of each reference


def _fleet(procs: WorkerProcs, db_url: str, targets: list[str], workers: int) -> Fleet:
    return Fleet(
        procs,
        db_url=db_url,
        ledger=procs.tmp_path / "ledger.txt",
        lease_ttl_s=3.0,
        heartbeat_s=1.0,
        target=targets,
        servers=2,
        workers=workers,
        concurrency=10,
    )


async def test_concurrent_duplicate_starts_from_several_processes_make_one_run_per_reference(
    chaos_db_url: str, chaos_procs: WorkerProcs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = _fleet(chaos_procs, chaos_db_url, ["tests.chaos.workload:PLAIN"], workers=0)
    await start_fleet(fleet)
    urls = ",".join(s.url for s in fleet.servers)
    go = tmp_path / "go"
    starters = []
    for i in range(PROCESSES):
        argv = ["-m", "tests.chaos.starter", "--urls", urls, "--refs", str(REFS), "--copies", str(COPIES)]
        argv += ["--ready-file", str(tmp_path / f"starter{i}.ready"), "--go-file", str(go)]
        argv += ["--out", str(tmp_path / f"starter{i}.jsonl")]
        starters.append(chaos_procs.spawn(f"starter{i}", argv))
    await all_of(chaos_procs.wait_ready(s) for s in starters)
    go.write_text("go\n")
    codes = await all_of(chaos_procs.wait_exit(s, timeout=120) for s in starters)
    assert codes == [0] * PROCESSES, [s.stderr_text()[-2000:] for s in starters]

    answers = [
        json.loads(line) for i in range(PROCESSES) for line in (tmp_path / f"starter{i}.jsonl").read_text().splitlines()
    ]
    assert len(answers) == REFS * PROCESSES * COPIES
    by_ref: dict[int, set[str]] = defaultdict(set)
    created: dict[int, int] = defaultdict(int)
    for a in answers:
        by_ref[a["ref"]].add(a["run_id"])
        created[a["ref"]] += a["created"]
    rows = await pg_fetch(chaos_db_url, "SELECT id, reference_id FROM runs WHERE workflow_name = $1", plain_v1.name)
    report(
        "duplicate-starts",
        [
            f"duplicate starts: refs={REFS} starts={len(answers)} ({PROCESSES} processes x {COPIES} copies, 2 servers) "
            f"runs={len(rows)} created_answers={sum(created.values())} retried_503={sum(a['retried'] for a in answers)}"
        ],
        capsys,
    )
    assert len(rows) == REFS
    assert {r["reference_id"] for r in rows} == {f"dedup-{i}" for i in range(REFS)}
    # Every answer for one reference names the one run; exactly one of them created it.
    assert all(len(ids) == 1 for ids in by_ref.values()), {r: ids for r, ids in by_ref.items() if len(ids) > 1}
    assert {r["id"] for r in rows} == {next(iter(ids)) for ids in by_ref.values()}
    assert dict(created) == dict.fromkeys(range(REFS), 1)


async def test_poison_pill_fails_with_recovery_exhausted_and_the_other_runs_complete(
    chaos_db_url: str, chaos_procs: WorkerProcs, capsys: pytest.CaptureFixture[str]
) -> None:
    # Slots 0 and 1 serve the pill (and plain runs, which die with it); slot 2 serves plain runs only.
    fleet = _fleet(
        chaos_procs,
        chaos_db_url,
        ["tests.chaos.workload:WITH_PILL", "tests.chaos.workload:WITH_PILL", "tests.chaos.workload:PLAIN"],
        workers=3,
    )
    try:
        await start_fleet(fleet)
        healthy = fleet.workers[2].child
        assert healthy is not None
        began = time.time()
        async with fleet.client(0) as api, fleet.client(1) as other:
            pill = await pill_v1.start(api, 0)
            plain = [await plain_v1.start(api if i % 2 else other, i) for i in range(20)]

            async def statuses() -> dict[str, str]:
                rows = await pg_fetch(chaos_db_url, "SELECT id, status FROM runs")
                return {r["id"]: r["status"] for r in rows}

            final = await poll_until_async(
                statuses,
                lambda s: s.get(pill.id) == "failed" and all(s.get(h.id) == "completed" for h in plain),
                timeout=180,
                what="the pill to fail and the other runs to complete",
                interval=0.5,
            )
            body = await pill.describe()
    finally:
        await fleet.stop_supervisor()
    ended = time.time()

    (row,) = await pg_fetch(chaos_db_url, "SELECT max_recoveries, recoveries FROM runs WHERE id = $1", pill.id)
    poison_runs = [line for line in read_ledger(fleet.ledger) if line.key == f"{pill.id}/poison"]
    # Who held the pill's leases: a claim by a worker already dead burns a recovery without a poisoning.
    dead_at = {pid: at for pid, _, at in fleet.deaths}
    history = await pg_fetch(
        chaos_db_url, "SELECT reason, created_at FROM run_history WHERE run_id = $1 ORDER BY id", pill.id
    )
    claims, dead_claims = [], []
    for h in history:
        reason = h["reason"] or ""
        if reason.startswith("claimed by "):
            pid = int(reason.removeprefix("claimed by ").split("-")[-2])
            at = h["created_at"] / 1000
            dead = dead_at.get(pid)
            state = "alive" if dead is None or dead > at else f"dead {at - dead:.1f}s before"
            claims.append(f"  claim at +{at - began:.1f}s by pid {pid} ({state})")
            if state != "alive":
                dead_claims.append(claims[-1])
    report(
        "poison-pill",
        [
            f"poison pill: failed after {ended - began:.0f}s, recoveries={row['recoveries']} "
            f"max_recoveries={row['max_recoveries']} poison_executions={len(poison_runs)} "
            f"worker_deaths={len(fleet.deaths)} worker_start_failures={len(fleet.start_failures)}; "
            f"other runs: {sum(final.get(h.id) == 'completed' for h in plain)}/{len(plain)} completed",
            *claims,
        ],
        capsys,
    )
    assert body.error is not None
    assert "recovery_exhausted" in (body.error.cause, body.error.type), body.error
    # A dead worker's claim claims nothing (issue 10, defect 8): every recovery reached a live
    # worker, which the pill then killed; none was burnt on a process already gone.
    assert dead_claims == [], dead_claims
    # It killed its worker once, then once after each recovery, each time in another process.
    assert len(poison_runs) == row["max_recoveries"] + 1, poison_runs
    assert len({line.pid for line in poison_runs}) == len(poison_runs)
    # The healthy worker never died.
    assert healthy.alive(), healthy.stderr_text()[-3000:]
    assert fleet.workers[2].child is healthy
    healthy.proc.send_signal(signal.SIGTERM)
    await poll_until(lambda: not healthy.alive(), timeout=20, what="the healthy worker to stop")
    assert healthy.proc.returncode == 0, healthy.stderr_text()[-3000:]
