"""``aiki server`` stopping (SIGTERM) answers its parked long-polls at once, empty.

Before, uvicorn cancelled each one at the end of its graceful-shutdown period: the client got a
dropped connection, and the server printed "Exception in ASGI application … CancelledError" for
every parked claim, watch and run wait.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.e2e.procs import WorkerProcs

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(120)]

SPEC = {"workflow": "e2e-five-steps", "version": "1.0.0"}


async def test_sigterm_answers_parked_claims_watches_and_run_waits_empty(procs: WorkerProcs) -> None:
    srv = await procs.start_server()
    async with procs.http(base_url=srv.url, timeout=60) as http:
        reg = {"worker_id": "shutdown-probe", "host": "t", "versions": [SPEC]}
        assert (await http.post("/api/v1/workers/register", json=reg)).status_code == 200
        claim = {
            "worker_id": "shutdown-probe",
            "versions": [["e2e-five-steps", "1.0.0"]],
            "max_runs": 1,
            "wait_ms": 20_000,
        }
        (await http.post("/api/v1/runs", json={**SPEC, "input": "held"})).raise_for_status()
        held = (await http.post("/api/v1/workers/claim", json=claim)).json()["activations"][0]
        # Nothing more is queued: these park for up to 20 s.
        claims = [asyncio.create_task(http.post("/api/v1/workers/claim", json=claim)) for _ in range(3)]
        watch = {"worker_id": "shutdown-probe", "runs": [[held["run_id"], held["revision"]]], "wait_ms": 20_000}
        watches = [asyncio.create_task(http.post("/api/v1/workers/watch", json=watch))]

        # Give them a moment to reach the server (nothing can answer them before the SIGTERM;
        # one that arrives later is answered empty as well).
        done, _ = await asyncio.wait([*claims, *watches], timeout=1.0)
        assert not done, "long-polls should still be parked"
        srv.child.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*claims, *watches)
    for resp in answers:
        assert resp.status_code == 200, resp.text
    assert [r.json()["activations"] for r in answers[:3]] == [[], [], []]
    assert answers[3].json().get("stale", []) == []
    code = await procs.wait_exit(srv.child, timeout=30)
    err = srv.child.stderr_text()
    assert code == 0, err[-3000:]
    assert "Exception in ASGI application" not in err, err[-3000:]
    assert "CancelledError" not in err, err[-3000:]
