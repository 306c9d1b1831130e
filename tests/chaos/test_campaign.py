"""The chaos campaign (``harness.py``): the quick profile runs in the test command, ``make chaos`` the long one.

One line sums it up: ``runs=N completed=N failed=N stuck=N duplicate_tasks=N double_records=N``;
before it, one line per fault with the recovery times measured after it.
"""

from __future__ import annotations

import pytest

from tests.chaos.cluster import Cluster
from tests.chaos.harness import Campaign, Fleet, profile_from_env, report, seed_from_env, start_fleet
from tests.e2e.procs import WorkerProcs

PROFILE = profile_from_env()

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.postgres_only,
    # The quick profile must fit in 5 minutes, cluster and processes included.
    pytest.mark.timeout(300 if PROFILE.name == "quick" else PROFILE.start_window_s + PROFILE.settle_s + 600),
]


async def test_runs_survive_killed_workers_servers_zombies_and_postgres_restarts(
    chaos_cluster: Cluster, chaos_db_url: str, chaos_procs: WorkerProcs, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = Fleet(
        chaos_procs,
        db_url=chaos_db_url,
        ledger=chaos_procs.tmp_path / "ledger.txt",
        lease_ttl_s=PROFILE.lease_ttl_s,
        heartbeat_s=PROFILE.heartbeat_s,
        target="tests.chaos.workload:VERSIONS",
        servers=PROFILE.servers,
        workers=PROFILE.workers,
        concurrency=PROFILE.concurrency,
    )
    try:
        await start_fleet(fleet)
        verdict = await Campaign(chaos_cluster, fleet, PROFILE, seed_from_env()).run()
    finally:
        await fleet.stop_supervisor()
    report(f"campaign-{PROFILE.name}", verdict.lines, capsys)

    assert verdict.runs == PROFILE.runs, verdict.summary
    assert verdict.stuck == 0, verdict.summary
    assert verdict.duplicate_tasks == 0, verdict.summary
    assert verdict.double_records == 0, verdict.summary
    # No fault of the infrastructure may fail a workflow (SPEC §4), nor lose a recorded side effect.
    assert verdict.failed == 0, verdict.summary
    assert verdict.lost_effects == 0, verdict.summary
    assert verdict.completed == PROFILE.runs, verdict.summary
