"""A worker that was away past its lease (stopped, paused) runs no task of a run it lost.

Found by the chaos suite (``tests/chaos``): a worker process SIGSTOPped past its lease, once resumed,
read the answers its server had given before (a claim, a held sleep's end) and ran the next task at
once, while the run had been recovered and that task already run by another worker. Its writes were
fenced, its side effect was not. Here the claim's answer reaches the worker only after the server
recovered the lease (as if the process had been stopped meanwhile): the task must run once, in the
execution that holds the run, on both databases, in process and over HTTP.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiki import Run, task, workflow
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, ClaimResponse
from tests.conftest import AikiHarness
from tests.integration.helpers import LEDGER, WAIT, new_key

LEASE_TTL = timedelta(seconds=1)


@task(name="away-side-effect")
async def side_effect(key: str) -> str:
    LEDGER.hit("away-side-effect", key)
    return key


away = workflow(name="lease-lost-while-away")


@away.v("1.0.0")
async def away_v1(run: Run, key: str) -> str:
    return await side_effect.start(run, key)


async def test_a_claim_answered_before_the_worker_was_away_runs_no_task(make_aiki: Any) -> None:
    aiki: AikiHarness = await make_aiki(lease_ttl=LEASE_TTL)
    worker_client = connect(aiki.client)
    key = new_key()
    claim = worker_client.claim
    delayed: list[str] = []

    async def claim_then_away(request: ClaimRequest) -> ClaimResponse:
        response = await claim(request)
        if response.activations and not delayed:
            # The worker is away: its lease expires and the server takes the run back.
            run_id = response.activations[0].run_id
            delayed.append(run_id)
            back = await aiki.client.get_run(run_id, wait_for=["queued"], timeout_ms=20_000)
            assert (back.status, back.recoveries) == ("queued", 1)
        return response

    worker_client.claim = claim_then_away  # type: ignore[method-assign]
    await aiki.worker([away_v1])
    handle = await away_v1.start(aiki.client, key)
    view = await handle.wait_for_status("completed", timeout=WAIT)

    assert delayed == [handle.id]
    assert view.recoveries == 1
    # Once, by the execution that held the run; not also by the one whose lease had gone.
    assert LEDGER.count("away-side-effect", key) == 1
