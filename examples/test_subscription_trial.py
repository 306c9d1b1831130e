"""Tests of the quick start's workflow (``examples/subscription_trial.py``) with ``aiki.testing``.

No server or database to run: each test gets an embedded server on a private in-memory database.
Run them (with pytest and pytest-asyncio installed) from the repository's root:

    pytest examples/test_subscription_trial.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from aiki.testing import WorkflowEnvironment
from examples.subscription_trial import TrialInput, trial_v1


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment(workflows=[trial_v1]) as env:
        yield env


async def test_a_paid_trial_is_not_downgraded(env: WorkflowEnvironment) -> None:
    run = await env.start(trial_v1, TrialInput(user_id="user-123"))

    waiting = await env.wait_until_waiting(run)
    assert waiting.status == "awaiting_event"  # 14 days for the payment
    await run.events.payment_received.send()

    assert await run.result() == "paid"
    assert [t.name for t in await env.tasks(run)] == ["activate-trial"]


async def test_an_unpaid_trial_is_downgraded(env: WorkflowEnvironment) -> None:
    # The trial's length is part of the input, so the test makes it end at once.
    run = await env.start(trial_v1, TrialInput(user_id="user-456", trial_period=timedelta(0)))

    assert await run.result() == "downgraded"
    tasks = await env.tasks(run)
    assert [(t.name, t.input) for t in tasks] == [("activate-trial", "user-456"), ("downgrade-to-free", "user-456")]
    assert "awaiting_event" in await env.statuses(run)
