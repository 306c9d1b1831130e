"""Example workflows that ``aiki dev`` serves on its in-process worker, so a newcomer sees runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiki.worker_sdk import RetryPolicy, Run, event, task, workflow


@dataclass
class TrialInput:
    user_id: str
    trial_period: timedelta = timedelta(days=14)


@task(name="activate-trial")
async def activate_trial(user_id: str) -> str:
    return f"trial active for {user_id}"


@task(name="downgrade-to-free", retry=RetryPolicy.exponential(max_attempts=5, base=timedelta(seconds=1)))
async def downgrade_to_free(user_id: str) -> str:
    return f"{user_id} is on the free plan"


subscription_trial = workflow(name="subscription-trial")


@subscription_trial.v("1.0.0", events={"payment_received": event()})
async def trial_v1(run: Run, input: TrialInput) -> str:
    """Activate a trial, then wait for payment; downgrade when the trial lapses."""
    await activate_trial.start(run, input.user_id)
    result = await run.events.payment_received.wait(timeout=input.trial_period)
    if result.timeout:
        await downgrade_to_free.start(run, input.user_id)
        return "downgraded"
    return "paid"


@dataclass
class Order:
    order_id: str
    items: list[str]


_FLAKED: set[str] = set()


@task(name="reserve-item", retry=RetryPolicy.exponential(max_attempts=4, base=timedelta(milliseconds=200)))
async def reserve_item(item: str) -> str:
    # A flaky inventory service: the first try for each item times out, and the retry policy
    # absorbs it, so the dashboard shows a retry without the demo ever failing.
    if item not in _FLAKED:
        _FLAKED.add(item)
        raise ConnectionError(f"inventory service timed out reserving {item}")
    await asyncio.sleep(0.05)
    return f"reserved {item}"


@task(name="charge-card")
async def charge_card(order_id: str) -> str:
    return f"charged {order_id}"


order_fulfilment = workflow(name="order-fulfilment")


@order_fulfilment.v("1.0.0")
async def order_v1(run: Run, input: Order) -> dict[str, Any]:
    """Reserve every item in parallel, wait a moment, then charge."""
    reserved = await asyncio.gather(*(reserve_item.start(run, item) for item in input.items))
    await run.sleep(timedelta(seconds=2), name="settle")
    receipt = await charge_card.start(run, input.order_id)
    return {"reserved": list(reserved), "receipt": receipt}


EXAMPLE_WORKFLOWS = (trial_v1, order_v1)


async def start_demo_runs(client: Any) -> list[str]:
    """Start a few runs of each example and return their ids."""
    handles: list[Any] = [
        await trial_v1.start(client, TrialInput(user_id="demo-user-1", trial_period=timedelta(seconds=10))),
        await order_v1.start(client, Order(order_id="demo-order-1", items=["book", "lamp", "mug"])),
    ]
    paid = await trial_v1.start(client, TrialInput(user_id="demo-user-2"))
    await paid.events.payment_received.send()
    handles.append(paid)
    return [h.id for h in handles]
