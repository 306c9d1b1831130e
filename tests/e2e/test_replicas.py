"""Several server replicas on one PostgreSQL database: each deadline fires once, each lost lease is recovered once.

Four servers run their timer loops side by side (each with its own wake-up hub, as separate
processes would). Delayed starts and expired leases of 150 runs come due at the same moment in all
of them; the history must show exactly one transition per deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from aiki import client, database, server
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, RegisterWorkerRequest, VersionRef, VersionSpec
from tests.e2e.procs import all_of, pg_fetch, poll_until_async
from tests.e2e.workflows import three_steps_v1

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(120)]

RUNS = 150
REPLICAS = 4


async def test_deadlines_fire_and_leases_are_recovered_once_across_replicas(e2e_db_url: str) -> None:
    servers = [
        server(db=database(url=e2e_db_url, migrate=False, pool_size=4), lease_ttl=timedelta(seconds=1))
        for _ in range(REPLICAS)
    ]
    for s in servers:
        await s.runtime.start()
    clients = [client(handler=s.handler) for s in servers]
    try:
        ghost = clients[0]
        version = VersionRef(three_steps_v1.name, three_steps_v1.version)
        await connect(ghost).register_worker(
            RegisterWorkerRequest(
                worker_id="ghost",
                host="nowhere",
                versions=[VersionSpec(workflow=version.workflow, version=version.version)],
            )
        )
        delayed = three_steps_v1.with_options(delay=timedelta(milliseconds=300))
        handles = await all_of([delayed.start(clients[i % REPLICAS], f"r{i}") for i in range(RUNS)], limit=20)
        run_ids = {h.id for h in handles}

        # The ghost worker takes every run once its start time comes, then never heartbeats.
        claimed: set[str] = set()
        async with asyncio.timeout(30):
            while len(claimed) < RUNS:
                resp = await connect(ghost).claim(
                    ClaimRequest(worker_id="ghost", versions=[version], max_runs=100, wait_ms=2000)
                )
                claimed |= {a.run_id for a in resp.activations}
        assert claimed == run_ids

        async def recovered() -> list[dict[str, object]]:
            rows = await pg_fetch(e2e_db_url, "SELECT id, status, recoveries, revision FROM runs")
            return [dict(r) for r in rows]

        rows = await poll_until_async(
            recovered,
            lambda rs: all(r["status"] == "queued" for r in rs),
            timeout=30,
            what="every lease to be recovered",
            interval=0.2,
        )
    finally:
        for c in clients:
            await c.close()
        for s in servers:
            await s.runtime.stop()
            await s.db.dispose()

    assert {r["id"] for r in rows} == run_ids
    # Claimed once (revision 1), recovered once (revision 2).
    assert {(r["recoveries"], r["revision"]) for r in rows} == {(1, 2)}
    history = await pg_fetch(e2e_db_url, "SELECT run_id, from_status, to_status, reason FROM run_history")
    transitions = Counter((h["run_id"], h["from_status"], h["to_status"]) for h in history)
    for run_id in run_ids:
        assert transitions[(run_id, "scheduled", "queued")] == 1, run_id
        assert transitions[(run_id, "queued", "running")] in (0, 1), run_id  # a claim may not write history
        assert transitions[(run_id, "running", "queued")] == 1, run_id
    expired = [h for h in history if h["from_status"] == "running"]
    assert all("expired" in h["reason"] for h in expired), expired
