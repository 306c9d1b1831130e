"""The lease-recovery pass gives workers a lease TTL after the database was unreachable.

``fire_due(..., leases_from=t)`` (the timer loop sets ``t`` one TTL after it reaches the database
again) expires no lease before ``t``, while other deadlines still fire; ``next_wake_at`` plans the
next pass for ``t``. Both databases; the network path with a real PostgreSQL restart is in
``tests/e2e/test_lease_grace_after_db_outage.py``.
"""

from __future__ import annotations

from datetime import timedelta

from aiki import Run, client, server, workflow
from aiki.platform.db.engine import Database
from aiki.platform.domain.ids import now_ms
from aiki.platform.services.timers import fire_due, next_wake_at
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, RegisterWorkerRequest, VersionRef, VersionSpec

graced = workflow(name="lease-grace")


@graced.v("1.0.0")
async def graced_v1(run: Run) -> None:
    return None


async def test_no_lease_expires_before_leases_from_and_it_does_after(db_url: str) -> None:
    srv = server(db=Database(db_url, migrate=False), lease_ttl=timedelta(seconds=1))  # runtime not started
    svc = srv.services
    async with client(handler=srv.handler) as api:
        spec = VersionSpec(workflow="lease-grace", version="1.0.0")
        await connect(api).register_worker(RegisterWorkerRequest(worker_id="w", host="t", versions=[spec]))
        held = await graced_v1.start(api)
        later = await graced_v1.with_options(delay=timedelta(milliseconds=1)).start(api)
        ref = VersionRef("lease-grace", "1.0.0")
        claimed = await connect(api).claim(ClaimRequest(worker_id="w", versions=[ref], max_runs=1))
        assert [a.run_id for a in claimed.activations] == [held.id]

        now = now_ms() + 60_000  # the lease (1 s) is long past due; so is the delayed start
        grace_until = now + 30_000
        await fire_due(svc, now, leases_from=grace_until)
        assert (await held.describe()).status == "running"
        assert (await later.describe()).status == "queued"  # other deadlines fire as usual
        assert await next_wake_at(svc, leases_from=grace_until) == grace_until

        await fire_due(svc, grace_until, leases_from=grace_until)
        view = await held.describe()
        assert view.status == "queued"
        assert view.recoveries == 1
    await srv.db.dispose()
