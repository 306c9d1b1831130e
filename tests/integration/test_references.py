"""Start options: reference ids (idempotent starts) and delayed starts (SPEC §2 "Start options")."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from aiki import ReferenceConflictError, Run, task, workflow

from .helpers import API, LEDGER, WAIT, count_runs, get_history, get_run, new_key

DELAY_MS = 1000


@dataclass
class OrderInput:
    order_id: str
    amount: int


@task(name="refs-charge")
async def charge(order_id: str) -> None:
    LEDGER.hit("refs-charge", order_id)


orders_wf = workflow(name="refs-orders")


@orders_wf.v("1.0.0")
async def orders_v1(run: Run, input: OrderInput) -> int:
    await charge.start(run, input.order_id)
    return input.amount


def _start_body(ref: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "workflow": "refs-orders",
        "version": "1.0.0",
        "input": {"order_id": ref, "amount": amount},
        "reference_id": ref,
        **extra,
    }


async def test_same_reference_and_input_returns_the_existing_run(aiki: Any) -> None:
    await aiki.worker([orders_v1])
    ref = new_key("order")
    with_ref = orders_v1.with_options(reference_id=ref)

    first = await with_ref.start(aiki.client, OrderInput(order_id=ref, amount=10))
    again = await with_ref.start(aiki.client, OrderInput(order_id=ref, amount=10))
    assert again.id == first.id

    resp = await aiki.http.post(f"{API}/runs", json=_start_body(ref, 10))
    assert resp.status_code == 200, resp.text  # 200 existing, not 201 created
    body = resp.json()
    assert body["created"] is False
    assert body["run"]["id"] == first.id

    by_ref = await orders_v1.get_handle_by_reference(aiki.client, ref)
    assert by_ref.id == first.id

    await first.wait_for_status("completed", timeout=WAIT)
    assert await first.result() == 10
    assert await count_runs(aiki.http) == 1
    assert LEDGER.count("refs-charge", ref) == 1


async def test_same_reference_with_other_input_conflicts_unless_return_existing(aiki: Any) -> None:
    await aiki.worker([orders_v1])
    ref = new_key("order")

    first = await orders_v1.with_options(reference_id=ref).start(aiki.client, OrderInput(ref, 10))

    with pytest.raises(ReferenceConflictError):
        await orders_v1.with_options(reference_id=ref).start(aiki.client, OrderInput(ref, 99))
    resp = await aiki.http.post(f"{API}/runs", json=_start_body(ref, 99))
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "reference_conflict"

    existing = await orders_v1.with_options(reference_id=ref, conflict="return_existing").start(
        aiki.client, OrderInput(ref, 99)
    )
    assert existing.id == first.id
    resp = await aiki.http.post(f"{API}/runs", json=_start_body(ref, 99, conflict="return_existing"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["run"]["id"] == first.id

    await first.wait_for_status("completed", timeout=WAIT)
    assert await first.result() == 10  # the original input, not the conflicting one
    assert await count_runs(aiki.http) == 1
    assert LEDGER.count("refs-charge", ref) == 1


# ---------------------------------------------------------------------------------------------
# Delayed start
# ---------------------------------------------------------------------------------------------


@task(name="refs-delayed-step")
async def delayed_step(key: str) -> None:
    LEDGER.hit("refs-delayed-step", key)


delayed_wf = workflow(name="refs-delayed")


@delayed_wf.v("1.0.0")
async def delayed_v1(run: Run, key: str) -> str:
    await delayed_step.start(run, key)
    return "done"


async def test_delayed_start_is_not_claimed_before_its_time(aiki: Any) -> None:
    key = new_key()
    await aiki.worker([delayed_v1])  # idle and ready to claim

    started = time.monotonic()
    handle = await delayed_v1.with_options(delay=timedelta(milliseconds=DELAY_MS)).start(aiki.client, key)

    # Time passing is the point here: the idle worker must not pick the run up early.
    await asyncio.sleep(0.2)
    status = await handle.status()
    steps = LEDGER.count("refs-delayed-step", key)
    if time.monotonic() - started < DELAY_MS / 1000:  # read before the delay ended (not on a machine that slow)
        assert (status, steps) == ("scheduled", 0)

    await handle.wait_for_status("completed", timeout=WAIT)
    assert await handle.result() == "done"
    assert LEDGER.count("refs-delayed-step", key) == 1
    # Server timestamps: the run was first claimed no earlier than its delay.
    run = await get_run(aiki.http, handle.id)
    history = await get_history(aiki.http, handle.id)
    assert history[0]["to_status"] == "scheduled"
    first_running = next(h for h in history if h["to_status"] == "running")
    assert first_running["created_at"] - run["created_at"] >= DELAY_MS - 1
