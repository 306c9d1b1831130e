"""The push endpoint the end-to-end tests serve with uvicorn, in its own process:

    python -m uvicorn tests.e2e.push_endpoint_app:build --factory --host 127.0.0.1 --port PORT

It is the SDK's ``endpoint(workflows=[...], client=client(url=..., api_key=...), secret=...)``, the
way a user mounts it in a serverless function, with the server's URL, a worker API key and the
signing secret given in the environment (:data:`SERVER_URL_ENV`, :data:`API_KEY_ENV`,
:data:`SECRET_ENV`). For the fault tests it can be wrapped (:class:`FailFirst`) to answer 500 to
its first requests, and a task can block until the process is killed (``$AIKI_E2E_BLOCK_TASK``).

Every task appends to the tests' ledger (``tests/e2e/workflows.py``), so a test sees across
processes which tasks ran, how often and where.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiki import Run, WorkflowVersion, client, endpoint, event, task, workflow
from tests.e2e.workflows import ledger_write, three_steps_v1

SERVER_URL_ENV = "PUSH_E2E_SERVER_URL"
API_KEY_ENV = "PUSH_E2E_API_KEY"
SECRET_ENV = "PUSH_E2E_SECRET"
FAIL_FIRST_ENV = "PUSH_E2E_FAIL_FIRST"
"""The endpoint answers 500 to this many deliveries before it serves any (0: none)."""
PEERS_ENV = "PUSH_E2E_PEERS"
"""``1``: the ledger gets each request's peer port (:class:`PeerLog`)."""

# -- the quick start's trial, with a durable sleep and a child run ------------------------------


@task(name="activate-trial")
async def activate_trial(run_id: str) -> str:
    ledger_write(run_id, "activate-trial", "start")
    return "active"


@task(name="send-receipt")
async def send_receipt(run_id: str) -> str:
    ledger_write(run_id, "send-receipt", "start")
    return f"receipt-{run_id}"


@dataclass
class TrialInput:
    user_id: str
    settle_ms: int = 200
    """The durable sleep between the payment and the receipt."""


receipt = workflow(name="push-receipt")


@receipt.v("1.0.0")
async def receipt_v1(run: Run, user_id: str) -> str:
    return await send_receipt.start(run, run.id)


trial = workflow(name="push-trial")


@trial.v("1.0.0", events={"payment_received": event(int)})
async def trial_v1(run: Run, input: TrialInput) -> str:
    await activate_trial.start(run, run.id)
    paid = await run.events.payment_received.wait(timeout=timedelta(minutes=5))
    if paid.timeout:
        return "downgraded"
    await run.sleep(timedelta(milliseconds=input.settle_ms), name="settle")
    child = await receipt_v1.start_as_child(run, input.user_id)
    done = await child.wait_for_status("completed", timeout=timedelta(minutes=5))
    if not done.completed:
        raise RuntimeError(f"the receipt run ended {done.status}")
    return f"paid {paid.data} by {input.user_id}, {done.output}"


# -- slow steps: outlives a short time limit ---------------------------------------------------

SLOW_STEP_S = 0.4


def _slow_step(name: str) -> Any:
    @task(name=name)
    async def handler(run_id: str) -> str:
        ledger_write(run_id, name, "start")
        await asyncio.sleep(SLOW_STEP_S)
        ledger_write(run_id, name, "done")
        return f"{name}-ok"

    return handler


SLOW_STEPS = [_slow_step(f"slow-{i}") for i in range(1, 5)]
slow = workflow(name="push-slow-steps")


@slow.v("1.0.0")
async def slow_v1(run: Run, input: str) -> list[str]:
    """Four 0.4 s tasks: more than an endpoint with a 1 s timeout may run in one delivery."""
    return [await step.start(run, run.id) for step in SLOW_STEPS]


WORKFLOWS: list[WorkflowVersion[Any, Any]] = [trial_v1, receipt_v1, three_steps_v1, slow_v1]
VERSIONS = [[v.name, v.version] for v in WORKFLOWS]
"""What an endpoint serving :data:`WORKFLOWS` registers (``EndpointCreate.versions``)."""


# -- the app ------------------------------------------------------------------------------------


class PeerLog:
    """ASGI middleware: writes each request's TCP peer port to the ledger (``- peer <port>``), so a
    test can tell which server process sent it (``push_support.server_of_ports``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("client"):
            ledger_write("-", "peer", str(scope["client"][1]))
        await self.app(scope, receive, send)


class FailFirst:
    """ASGI middleware: answers 500 to the first ``count`` HTTP requests, then passes them on."""

    def __init__(self, app: Any, count: int) -> None:
        self.app = app
        self.left = count

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.left > 0:
            self.left -= 1
            ledger_write("-", "fail-500", "answered")
            # Read the body first, as a real failing function would have.
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"injected failure"})
            return
        await self.app(scope, receive, send)


def build() -> Any:
    """The ASGI app (uvicorn ``--factory``): configured from the environment."""
    app: Any = endpoint(
        workflows=WORKFLOWS,
        client=client(url=os.environ[SERVER_URL_ENV], api_key=os.environ[API_KEY_ENV]),
        secret=os.environ[SECRET_ENV],
    )
    fail_first = int(os.environ.get(FAIL_FIRST_ENV, "0"))
    if fail_first:
        app = FailFirst(app, fail_first)
    return PeerLog(app) if os.environ.get(PEERS_ENV) == "1" else app
