"""The embedded client's in-process port answers exactly as HTTP does (errors, limits, fencing).

Every test runs the same calls through ``client(handler=...)`` (the local port) and through
``client(handler=..., local_port=False)`` (HTTP over ASGI), on both databases.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from aiki import Run, client, event, task, worker, workflow
from aiki.worker_sdk._execution import Execution
from aiki.worker_sdk._run_writer import raise_problems
from aiki.worker_sdk._transport import HttpTransport, LocalTransport
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.errors import (
    AikiError,
    NotFoundError,
    PayloadTooLargeError,
    RunNotFoundError,
    StaleRevisionError,
    ValidationError,
    WorkflowNotFoundError,
)
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    Complete,
    RecordTask,
    RegisterWorkerRequest,
    StartRunRequest,
    VersionRef,
    VersionSpec,
)
from aiki.worker_sdk.transport import find_local_port

from .helpers import LEDGER, WAIT, get_history, new_key


@pytest.fixture
def transport() -> str:
    """Port only: this file compares the local port with HTTP itself (each test drives both), so the
    integration suite's HTTP-on-loopback leg would only repeat it."""
    return "port"


class Order(msgspec.Struct):
    sku: str
    quantity: int


@task(name="port-step")
async def port_step(order: Order) -> int:
    LEDGER.hit("port-step", order.sku)
    return order.quantity + 1


port_wf = workflow(name="port-orders")


@port_wf.v("1.0.0")
async def port_v1(run: Run, order: Order) -> int:
    first = await port_step.start(run, order)
    return await port_step.start(run, Order(sku=order.sku, quantity=first))


@pytest.fixture
async def clients(aiki: Any) -> AsyncIterator[dict[str, Client]]:
    """The embedded client (local port) and an HTTP-only client of the same server."""
    http = client(handler=aiki.handler, local_port=False)
    assert isinstance(aiki.client.transport, LocalTransport)
    assert isinstance(http.transport, HttpTransport)
    yield {"local": aiki.client, "http": http}
    await http.close()


def _same(errors: dict[str, AikiError]) -> AikiError:
    """Both paths raised the same class with the same code, status, detail, field and run id."""
    local, http = errors["local"], errors["http"]
    assert type(local) is type(http)
    assert (local.code, local.status, local.detail, local.run_id) == (http.code, http.status, http.detail, http.run_id)
    assert getattr(local, "field", None) == getattr(http, "field", None)
    return local


async def _register(c: Client, worker_id: str) -> None:
    await connect(c).register_worker(
        RegisterWorkerRequest(
            worker_id=worker_id,
            host="test",
            versions=[
                VersionSpec(
                    workflow="port-orders",
                    version="1.0.0",
                    input_schema=msgspec.json.schema(Order),
                )
            ],
        )
    )


async def test_an_embedded_server_offers_its_port(aiki: Any) -> None:
    assert find_local_port(aiki.handler) is not None
    assert find_local_port(object()) is None


async def test_unknown_workflow_is_the_same_not_found_error(clients: dict[str, Client]) -> None:
    errors: dict[str, AikiError] = {}
    for name, c in clients.items():
        with pytest.raises(WorkflowNotFoundError) as info:
            await c.start_run(
                StartRunRequest(workflow="port-nowhere", version="9.9.9", input=1, require_registered=True)
            )
        errors[name] = info.value
    error = _same(errors)
    assert isinstance(error, NotFoundError)
    assert error.status == 404
    assert "port-nowhere" in error.detail


async def test_unknown_run_is_the_same_run_not_found_error(clients: dict[str, Client]) -> None:
    errors: dict[str, AikiError] = {}
    for name, c in clients.items():
        with pytest.raises(RunNotFoundError) as info:
            await c.get_run("no-such-run", wait_for=("completed",), timeout_ms=50)
        errors[name] = info.value
    assert _same(errors).status == 404


async def test_input_that_breaks_the_schema_names_the_same_field(clients: dict[str, Client]) -> None:
    await _register(clients["http"], "port-schema-worker")
    errors: dict[str, AikiError] = {}
    for name, c in clients.items():
        bad = {"sku": "a", "quantity": "many"}
        with pytest.raises(ValidationError) as info:
            await c.start_run(StartRunRequest(workflow="port-orders", version="1.0.0", input=bad))
        errors[name] = info.value
    error = _same(errors)
    assert error.status == 422
    assert getattr(error, "field", None) == "$.quantity"


async def test_a_body_field_of_the_wrong_type_names_the_same_field(clients: dict[str, Client]) -> None:
    await _register(clients["http"], "port-body-worker")
    errors: dict[str, AikiError] = {}
    for name, c in clients.items():
        request = StartRunRequest(workflow="port-orders", version="1.0.0", input={"sku": "a", "quantity": 1})
        request.pool = 5  # type: ignore[assignment]
        with pytest.raises(ValidationError) as info:
            await c.start_run(request)
        errors[name] = info.value
    error = _same(errors)
    assert getattr(error, "field", None) == "$.pool"


async def test_a_body_over_the_size_limit_is_the_same_413(clients: dict[str, Client]) -> None:
    await _register(clients["http"], "port-size-worker")
    errors: dict[str, AikiError] = {}
    for name, c in clients.items():
        big = {"sku": "x" * (70 * 1024), "quantity": 1}  # the harness allows 64 KiB
        with pytest.raises(PayloadTooLargeError) as info:
            await c.start_run(StartRunRequest(workflow="port-orders", version="1.0.0", input=big))
        errors[name] = info.value
    assert _same(errors).status == 413


async def test_stale_revisions_are_fenced_the_same_way(aiki: Any, clients: dict[str, Client]) -> None:
    for name, c in clients.items():
        worker_id = f"port-fence-{name}"
        await _register(c, worker_id)
        handle = await port_v1.start(c, Order(sku=new_key(), quantity=1))
        claim = await connect(c).claim(
            ClaimRequest(worker_id=worker_id, versions=[VersionRef("port-orders", "1.0.0")], max_runs=1, wait_ms=5000)
        )
        [activation] = claim.activations
        assert activation.run_id == handle.id
        await handle.cancel()  # bumps the revision: the claim's executor is fenced off
        record = RecordTask(
            run_id=handle.id,
            revision=activation.revision,
            address="port-step:x",
            seq=0,
            name="port-step",
            status="completed",
            attempts=1,
        )
        with pytest.raises(StaleRevisionError) as stale_record:
            raise_problems(await connect(c).run_commands([record]))
        complete = Complete(run_id=handle.id, revision=activation.revision, output=1)
        with pytest.raises(StaleRevisionError) as stale_transition:
            raise_problems(await connect(c).run_commands([complete]))
        assert stale_record.value.status == stale_transition.value.status == 409
        assert stale_record.value.run_id == handle.id

        # An executor holding the stale revision runs its first task, is refused, and stops
        # without writing anything: the run stays cancelled with no task recorded.
        execution = Execution(connect(c), port_v1, activation)
        await execution.execute()
        assert execution.finished
        detail = await c.run_detail(handle.id)
        assert detail.run.status == "cancelled"
        assert detail.tasks == []


async def test_a_run_completes_the_same_over_http_and_over_the_port(clients: dict[str, Client]) -> None:
    for name, c in clients.items():
        handle_w = await worker(workflows=[port_v1], worker_id=f"port-run-{name}").spawn(c)
        try:
            sku = new_key()
            handle = await port_v1.start(c, Order(sku=sku, quantity=1))
            assert await handle.result() == 3
            assert LEDGER.count("port-step", sku) == 2
        finally:
            await handle_w.stop()


async def test_a_server_with_iam_offers_no_port(iam_aiki: Any) -> None:
    # With IAM on, an embedded client goes through HTTP: API keys, roles and audit apply.
    assert find_local_port(iam_aiki.handler) is None
    assert isinstance(client(handler=iam_aiki.handler).transport, HttpTransport)


inbox_wf = workflow(name="port-inbox")


@inbox_wf.v("1.0.0", events={"item": event()})
async def inbox_v1(run: Run, key: str) -> list[Any]:
    first = await run.events.item.wait(timeout=timedelta(minutes=5))
    second = await run.events.item.wait(timeout=timedelta(minutes=5))
    return [first.data, second.data]


async def test_events_sent_before_the_first_claim_are_in_the_first_activation(aiki: Any) -> None:
    # A first claim reads nothing but the events the claim saw; events sent while the run was queued
    # reach the workflow in order, without a suspension.
    await _register_inbox(aiki)
    handle = await inbox_v1.start(aiki.client, new_key())
    await handle.events.item.send("first")
    await handle.events.item.send("second")
    assert await handle.status() == "queued"
    await aiki.worker([inbox_v1])
    assert await asyncio.wait_for(handle.result(), timeout=WAIT.total_seconds()) == ["first", "second"]
    history = await get_history(aiki.http, handle.id)
    assert [h["to_status"] for h in history] == ["queued", "running", "completed"]  # never suspended


async def _register_inbox(aiki: Any) -> None:
    # Register the version (so the run can start) without a worker claiming yet.
    w = await worker(workflows=[inbox_v1], worker_id="port-inbox-registrar").spawn(aiki.client)
    await w.stop()
