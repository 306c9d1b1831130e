"""Test your workflows without a server or a database of your own.

:class:`WorkflowEnvironment` runs the real Aiki server embedded in the test's event loop, on a
private in-memory SQLite database, with a worker for your workflow versions and a client. Start
runs, send events, end sleeps now, and read back what each run did (its tasks, statuses and
children) through the public API; leave the ``async with`` and everything is stopped and freed.
It needs the server extra (``pip install 'aiki[server]'``).

Example:
    >>> import asyncio
    >>> from dataclasses import dataclass
    >>> from datetime import timedelta
    >>> from aiki import Run, event, task, workflow
    >>> from aiki.testing import WorkflowEnvironment
    >>> @dataclass
    ... class Order:
    ...     id: str
    ...     amount: int
    >>> @task(name="doc-reserve")
    ... async def reserve(order: Order) -> str:
    ...     return f"reservation-{order.id}"
    >>> @task(name="doc-charge")
    ... async def charge(amount: int) -> int:
    ...     return amount
    >>> checkout = workflow(name="doc-checkout")
    >>> @checkout.v("1", events={"payment": event(int)})
    ... async def checkout_v1(run: Run, order: Order) -> str:
    ...     reservation = await reserve.start(run, order)
    ...     paid = await run.events.payment.wait(timeout=timedelta(days=1))
    ...     if paid.timeout:
    ...         return "expired"
    ...     await run.sleep(timedelta(hours=1), name="settle")
    ...     charged = await charge.start(run, paid.data)
    ...     return f"{reservation} charged {charged}"
    >>> async def test_checkout() -> None:
    ...     async with WorkflowEnvironment(workflows=[checkout_v1]) as env:
    ...         run = await env.start(checkout_v1, Order(id="o-1", amount=30))
    ...         waiting = await env.wait_until_waiting(run)
    ...         assert waiting.status == "awaiting_event"
    ...         await run.events.payment.send(30)
    ...         await env.skip_sleep(run)  # the hour is over now
    ...         assert await run.result() == "reservation-o-1 charged 30"
    ...         assert [t.name for t in await env.tasks(run)] == ["doc-reserve", "doc-charge"]
    ...         assert (await env.tasks(run))[0].input == {"id": "o-1", "amount": 30}
    ...         assert (await env.statuses(run))[-1] == "completed"
    >>> asyncio.run(test_checkout())

    In a pytest suite (with pytest-asyncio), make the environment a fixture::

        @pytest.fixture
        async def env():
            async with WorkflowEnvironment(workflows=[checkout_v1]) as env:
                yield env

See ``docs/testing.md`` for the whole guide.
"""

from __future__ import annotations

from aiki.testing._environment import WAITING_STATUSES, RunRef, WorkflowEnvironment
from aiki.testing._records import SentEvent, TaskCall

__all__ = ["WAITING_STATUSES", "RunRef", "SentEvent", "TaskCall", "WorkflowEnvironment"]
