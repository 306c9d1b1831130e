"""The subscription trial of the quick start: activate a trial, wait for payment or downgrade.

Run it as is (SQLite by default, or set DATABASE_URL to a PostgreSQL URL):

    python examples/subscription_trial.py

It starts two runs: one whose payment arrives early (it completes without a downgrade) and one
with a one-second trial and no payment (the downgrade task runs, then it completes).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from aiki import RetryPolicy, Run, client, database, event, server, task, worker, workflow

log = logging.getLogger("examples.subscription_trial")

# What the tasks did, so the example (and its test) can show it: a stand-in for real side effects.
LEDGER: list[tuple[str, str]] = []


@task(name="activate-trial")
async def activate_trial(user_id: str) -> None:
    LEDGER.append(("activate-trial", user_id))


@task(name="downgrade-to-free", retry=RetryPolicy.exponential(max_attempts=5, base=timedelta(seconds=1)))
async def downgrade_to_free(user_id: str) -> None:
    LEDGER.append(("downgrade-to-free", user_id))


@dataclass
class TrialInput:
    user_id: str
    trial_period: timedelta = timedelta(days=14)


subscription_trial = workflow(name="subscription-trial")


@subscription_trial.v("1.0.0", events={"payment_received": event()})
async def trial_v1(run: Run, input: TrialInput) -> str:
    await activate_trial.start(run, input.user_id)
    result = await run.events.payment_received.wait(timeout=input.trial_period)
    if result.timeout:
        await downgrade_to_free.start(run, input.user_id)
        return "downgraded"
    return "paid"


async def main(database_url: str | None = None) -> dict[str, str]:
    """The one-process app of the quick start; returns each user's outcome."""
    url = database_url or os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///aiki.db")
    aiki_server = server(db=database(url=url))
    runtime = await aiki_server.runtime.start()
    aiki_client = client(handler=aiki_server.handler)  # in-process ASGI, no network hop
    worker_handle = await worker(workflows=[trial_v1]).spawn(aiki_client)
    try:
        # Payment arrives early: the run completes without a downgrade.
        paid = await trial_v1.start(aiki_client, TrialInput(user_id="user-123"))
        await paid.events.payment_received.send()
        await paid.wait_for_status("completed")

        # No payment and a one-second trial: the downgrade task runs, then the run completes.
        lapsed = await trial_v1.start(aiki_client, TrialInput(user_id="user-456", trial_period=timedelta(seconds=1)))
        await lapsed.wait_for_status("completed")
        return {"user-123": await paid.result(), "user-456": await lapsed.result()}
    finally:
        await worker_handle.stop()
        await runtime.stop()
        await aiki_client.close()
        await aiki_server.db.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    outcome = asyncio.run(main())
    print(outcome)
    print("tasks run:", LEDGER)
