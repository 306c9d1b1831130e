"""Serverless: the subscription trial executed by a push endpoint instead of a worker.

Run it as is (everything on this machine, in one process, for the demo):

    python examples/push_endpoint.py

It starts an Aiki server (SQLite in a temporary directory, IAM on, private endpoint URLs allowed
because the endpoint listens on 127.0.0.1), serves the endpoint app with uvicorn on a local port,
registers it with ``POST /api/v1/endpoints``, starts a run, sends its payment event and prints the
result and the run's deliveries. No worker runs: the server POSTs each activation to the endpoint.

In production the two halves live apart. The function (any ASGI host: a serverless platform, a
container, ``uvicorn app:app``) holds only this:

    app = endpoint(
        workflows=[trial_v1],
        client=client(url="https://aiki.example.com", api_key=os.environ["AIKI_API_KEY"]),  # a worker key
        secret=os.environ["AIKI_ENDPOINT_SECRET"],  # whsec_..., shown once at registration
    )

and the server (``aiki server``) learns the function's public URL once, from an admin:

    curl -X POST https://aiki.example.com/api/v1/endpoints -H "authorization: Bearer $ADMIN_KEY" \\
      -H 'content-type: application/json' \\
      -d '{"url": "https://fn.example.com/", "versions": [["subscription-trial", "1.0.0"]]}'

See docs/push.md for signatures, retries, the circuit breaker and the SSRF guard.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from aiki import Run, client, database, endpoint, event, server, task, workflow
from aiki.iam.config import IamConfig
from aiki.iam.keys import replace_server_key
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID

log = logging.getLogger("examples.push_endpoint")


@task(name="activate-trial")
async def activate_trial(user_id: str) -> str:
    return f"trial active for {user_id}"


@task(name="downgrade-to-free")
async def downgrade_to_free(user_id: str) -> str:
    return f"{user_id} is on the free plan"


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main() -> dict[str, Any]:
    """The demo: returns the run's result and its deliveries."""
    with tempfile.TemporaryDirectory(prefix="aiki-push-example-") as tmp:
        aiki_server = server(
            db=database(url=f"sqlite+aiosqlite:///{Path(tmp) / 'aiki.db'}"),
            iam=IamConfig(
                secret_key="example-secret-key-" + "0123456789abcdefghijklmnopqrstuvwxyz", base_url="http://aiki"
            ),
            endpoints_allow_private=True,  # the endpoint below listens on 127.0.0.1
        )
        runtime = await aiki_server.runtime.start()
        assert aiki_server.iam is not None
        # Two API keys of the `default` namespace: the admin registers the endpoint and starts
        # runs; the endpoint records what it executes with the worker key.
        admin_key = (await replace_server_key(aiki_server.iam, DEFAULT_NAMESPACE_ID, "example admin", "admin")).key
        worker_key = (await replace_server_key(aiki_server.iam, DEFAULT_NAMESPACE_ID, "example fn", "worker")).key
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=aiki_server.handler),
            base_url="http://aiki",
            headers={"authorization": f"Bearer {admin_key}"},
        )
        aiki_client = client(handler=aiki_server.handler, api_key=admin_key)

        # Register the endpoint: the answer holds its signing secret, shown this once.
        port = _free_port()
        made = await admin.post(
            "/api/v1/endpoints",
            json={"url": f"http://127.0.0.1:{port}/", "versions": [[trial_v1.name, trial_v1.version]]},
        )
        made.raise_for_status()
        secret = made.json()["secret"]

        # The function: the endpoint app, served by uvicorn. Its client talks to the server in
        # process here; in production it is `client(url=..., api_key=...)`.
        app = endpoint(
            workflows=[trial_v1],
            client=client(handler=aiki_server.handler, api_key=worker_key),
            secret=secret,
        )
        fn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(fn.serve())
        try:
            for _ in range(1000):  # up to ~10 s for uvicorn to bind the port
                if fn.started or serving.done():
                    break
                await asyncio.sleep(0.01)
            if not fn.started:
                raise RuntimeError(f"the endpoint app did not start on port {port}")
            handle = await trial_v1.start(aiki_client, TrialInput(user_id="user-123"))
            await handle.wait_for_status("awaiting_event", timeout=30)
            await handle.events.payment_received.send()
            outcome = await asyncio.wait_for(handle.result(), 30)
            # The server writes a delivery's row when the endpoint's answer reaches it, a moment
            # after the run it completed is visible.
            deliveries: list[dict[str, Any]] = []
            for _ in range(500):  # up to ~5 s
                deliveries = (await admin.get(f"/api/v1/runs/{handle.id}/deliveries")).json()["items"]
                if any(d["outcome"] == "completed" for d in deliveries):
                    break
                await asyncio.sleep(0.01)
            return {"run": handle.id, "result": outcome, "deliveries": deliveries}
        finally:
            fn.should_exit = True
            await serving
            await admin.aclose()
            await aiki_client.close()
            await runtime.stop()
            await aiki_server.db.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):  # every request, every migration
        logging.getLogger(noisy).setLevel(logging.WARNING)
    done = asyncio.run(main())
    print(f"run {done['run']}: {done['result']}")
    for d in done["deliveries"]:
        print(f"  delivery attempt {d['attempt']} (revision {d['revision']}): {d['outcome']}, {d.get('latency_ms')} ms")
