"""A PostgreSQL outage longer than the lease TTL does not cost live workers their leases.

While the database is down no worker can heartbeat. When it is back, the lease-recovery pass
must give workers one lease TTL to heartbeat again before it expires their leases; otherwise
every run in flight is recovered and its finished tasks run a second time because of the
server's own outage.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.procs import WorkerProcs, poll_until_async
from tests.e2e.scratch_cluster import ScratchCluster, cluster_with_procs

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

# The grace after the outage is one TTL, and the test reads the run's state some time after the
# database is back (it waits for the timer loop's first pass): a TTL of a few seconds keeps that
# read well inside the grace on a loaded machine.
TTL_S = 6.0
SPEC = {"workflow": "e2e-five-steps", "version": "1.0.0"}
WORKER = "outage-probe"


async def _fetchrow(cluster: ScratchCluster, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(cluster.url("aiki"))
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def test_leases_do_not_expire_because_the_database_was_down(tmp_path: Path) -> None:
    async with cluster_with_procs(tmp_path) as (cluster, procs):
        await _exercise(procs, cluster)


async def _exercise(procs: WorkerProcs, cluster: ScratchCluster) -> None:
    srv = await procs.start_server(pool_size=6, env={"AIKI_LEASE_TTL": f"{TTL_S:g}", "AIKI_HEARTBEAT_INTERVAL": "0.5"})
    async with procs.http(base_url=srv.url, timeout=30) as http:
        reg = {"worker_id": WORKER, "host": "t", "versions": [SPEC]}
        assert (await http.post("/api/v1/workers/register", json=reg)).status_code == 200
        held = (await http.post("/api/v1/runs", json={**SPEC, "input": "held"})).json()["run"]["id"]
        claim = {"worker_id": WORKER, "versions": [["e2e-five-steps", "1.0.0"]], "max_runs": 1, "wait_ms": 10_000}
        resp = await http.post("/api/v1/workers/claim", json=claim)
        (activation,) = resp.json()["activations"]
        assert activation["run_id"] == held
        # A run that comes due while the database is down: once it is queued, the timer loop has
        # made a pass over due deadlines after the outage (the held lease is due by then too).
        sentinel = (await http.post("/api/v1/runs", json={**SPEC, "input": "s", "delay_ms": int(TTL_S * 1000)})).json()[
            "run"
        ]["id"]

        # Down for longer than the lease TTL (the fault injected): nobody can heartbeat.
        await asyncio.to_thread(cluster.stop)
        down_since = time.monotonic()
        down_ms = time.time() * 1000
        while time.monotonic() - down_since < 2 * TTL_S:
            resp = await http.post(
                "/api/v1/workers/heartbeat", json={"worker_id": WORKER, "runs": [[held, activation["revision"]]]}
            )
            assert resp.status_code == 503, resp.text
            await asyncio.sleep(0.2)
        await asyncio.to_thread(cluster.start)

        async def status_of(run_id: str) -> Any:
            try:
                return await _fetchrow(cluster, "SELECT status, recoveries FROM runs WHERE id = $1", run_id)
            except (OSError, asyncpg.PostgresError):
                return None

        await poll_until_async(
            lambda: status_of(sentinel),
            lambda row: row is not None and row["status"] != "scheduled",
            timeout=60,
            what="the timer loop to fire the deadline that came due during the outage",
        )
        fired = await _fetchrow(
            cluster,
            "SELECT min(created_at) AS at FROM run_history WHERE run_id = $1 AND from_status = 'scheduled'",
            sentinel,
        )
        assert fired["at"] > down_ms, "the sentinel fired before the outage: the test proves nothing"
        row = await status_of(held)
        assert (row["status"], row["recoveries"]) == ("running", 0), "the lease expired because of the outage"

        # The worker heartbeats again: it still holds its run.
        beat = {"worker_id": WORKER, "runs": [[held, activation["revision"]]]}
        resp = await http.post("/api/v1/workers/heartbeat", json=beat)
        assert resp.status_code == 200, resp.text
        assert resp.json()["stale"] == []

        # A worker that stays silent still loses its lease, one TTL after the database came back.
        row = await poll_until_async(
            lambda: status_of(held),
            lambda row: row is not None and row["recoveries"] == 1,
            timeout=60,
            what="the silent worker's lease to expire",
        )
        assert row["status"] in ("queued", "running")
