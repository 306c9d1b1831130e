"""A start before any worker registered the version (issue 10, defect 11): accepted by default, the
run waits in ``queued`` for a worker, which checks its input; ``require_registered=True`` keeps the
strict 404. In process (local port) and over HTTP, on both databases."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from aiki import Run, RunFailedError, WorkflowNotFoundError, event, workflow
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.worker_sdk.protocol import StartRunRequest
from tests.conftest import AikiHarness

from .helpers import WAIT, new_key


@dataclass
class Order:
    order_id: str
    quantity: int


late_wf = workflow(name="unreg-late")


@late_wf.v("1.0.0", events={"paid": event(int)}, timeout=timedelta(minutes=7))
async def late_v1(run: Run, order: Order) -> dict[str, object]:
    paid = await run.events.paid.wait(timeout=timedelta(minutes=1))
    return {"order": order.order_id, "quantity": order.quantity, "paid": paid.data}


async def _timeout_ms(aiki: AikiHarness, run_id: str) -> int | None:
    async with aiki.server.services.db.autocommit() as conn:
        row = await RunRepository(conn, DEFAULT_NAMESPACE_ID).get(run_id)
    assert row is not None
    value: int | None = row["timeout_ms"]
    return value


async def test_a_start_before_any_worker_waits_queued_and_runs_once_one_registers(aiki: AikiHarness) -> None:
    key = new_key()
    handle = await late_v1.start(aiki.client, Order(order_id=key, quantity=2))
    assert await handle.status() == "queued"
    # An event for it is buffered too (it cannot be checked against a schema nobody sent yet).
    await handle.events.paid.send(7)
    assert await _timeout_ms(aiki, handle.id) is None

    await aiki.worker([late_v1])
    output = await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    assert output == {"order": key, "quantity": 2, "paid": 7}
    # The version's time limit, unknown at the start, was given to the run at registration.
    assert await _timeout_ms(aiki, handle.id) == 7 * 60 * 1000


async def test_an_input_that_does_not_fit_fails_the_run_naming_the_field_once_registered(aiki: AikiHarness) -> None:
    # Sent as raw JSON (the SDK checks its own type before sending): the server cannot check it yet.
    body = {"order_id": new_key(), "quantity": "two"}
    response = await aiki.client.start_run(
        StartRunRequest(workflow="unreg-late", version="1.0.0", input=msgspec.Raw(msgspec.json.encode(body)))
    )
    assert response.created
    assert response.run.status == "queued"
    handle = late_v1._handle(aiki.client, response.run.id)

    await aiki.worker([late_v1])
    with pytest.raises(RunFailedError):
        await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    ended = await handle.describe()
    assert ended.status == "failed"
    assert ended.error is not None
    assert (ended.error.type, ended.error.code) == ("ValidationError", "validation_error")
    assert "quantity" in ended.error.message


async def test_require_registered_refuses_with_workflow_not_found(aiki: AikiHarness) -> None:
    strict = late_v1.with_options(require_registered=True, reference_id=new_key())
    with pytest.raises(WorkflowNotFoundError) as info:
        await strict.start(aiki.client, Order(order_id=new_key(), quantity=1))
    assert "unreg-late" in str(info.value)
    assert (await aiki.client.list_runs(workflow="unreg-late")).items == []
    # Once registered, the strict start goes through.
    await aiki.worker([late_v1])
    handle = await strict.start(aiki.client, Order(order_id=new_key(), quantity=1))
    assert await handle.status() in ("queued", "running", "awaiting_event")


async def test_a_run_of_a_version_no_worker_serves_becomes_stalled(make_aiki: Any) -> None:
    aiki = await make_aiki(stall_after=timedelta(milliseconds=200))
    handle = await late_v1.start(aiki.client, Order(order_id=new_key(), quantity=1))
    view = await handle.wait_for_status("stalled", timeout=WAIT)
    assert view.status == "stalled"
    # Like any stalled run it can be requeued. (Whether it then runs is not checked here: with
    # a stall age this short, it may stall again before a worker claims it.)
    requeued = await handle.requeue()
    assert requeued.status == "queued"
