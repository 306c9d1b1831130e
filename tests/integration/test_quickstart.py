"""The quick start of SPEC §2 (subscription trial), end to end on the embedded setup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiki import RetryPolicy, Run, event, task, workflow

from .helpers import LEDGER, WAIT, new_key


@task(name="qs-activate-trial")
async def activate_trial(user_id: str) -> None:
    LEDGER.hit("qs-activate-trial", user_id)


@task(
    name="qs-downgrade-to-free",
    retry=RetryPolicy.exponential(max_attempts=5, base=timedelta(seconds=1)),
)
async def downgrade_to_free(user_id: str) -> None:
    LEDGER.hit("qs-downgrade-to-free", user_id)


@dataclass
class TrialInput:
    user_id: str
    trial_ms: int = 14 * 24 * 3600 * 1000  # 14 days; the tests shorten it


subscription_trial = workflow(name="qs-subscription-trial")


@subscription_trial.v("1.0.0", events={"payment_received": event()})
async def trial_v1(run: Run, input: TrialInput) -> None:
    await activate_trial.start(run, input.user_id)
    result = await run.events.payment_received.wait(timeout=timedelta(milliseconds=input.trial_ms))
    if result.timeout:
        await downgrade_to_free.start(run, input.user_id)


async def test_trial_paid_early_completes_without_downgrade(aiki: Any) -> None:
    user = new_key("user")
    await aiki.worker([trial_v1])

    handle = await trial_v1.start(aiki.client, TrialInput(user_id=user, trial_ms=30_000))
    await handle.events.payment_received.send()
    await handle.wait_for_status("completed", timeout=WAIT)  # well before the 30 s trial ends

    assert await handle.result() is None
    assert LEDGER.count("qs-activate-trial", user) == 1
    assert LEDGER.count("qs-downgrade-to-free", user) == 0


async def test_trial_expired_downgrades_then_completes(aiki: Any) -> None:
    user = new_key("user")
    await aiki.worker([trial_v1])

    handle = await trial_v1.start(aiki.client, TrialInput(user_id=user, trial_ms=200))
    await handle.wait_for_status("completed", timeout=WAIT)

    assert await handle.result() is None
    assert LEDGER.count("qs-activate-trial", user) == 1
    assert LEDGER.count("qs-downgrade-to-free", user) == 1
