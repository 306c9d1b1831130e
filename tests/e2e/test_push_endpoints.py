"""Push endpoints across real processes: `aiki server` (IAM on, PostgreSQL) delivers runs as signed
POSTs to the SDK's ``endpoint(...)`` app served by uvicorn in another process (no worker at all).

- the quick start's trial completes through push only: a task, the payment event sent by the
  client, a durable sleep and a child run;
- faults: 500 twice then 200 (retried, tasks recorded once); the endpoint down, then back (the
  breaker opens, then closes); the endpoint SIGKILLed mid-activation (re-delivered, nothing recorded
  twice); an activation past its time limit (handed back, delivered again, nothing recorded twice);
  two server replicas deliver a burst of 200 runs, each activation once;
- signatures: tampered body, wrong secret, old timestamp, replayed ``webhook-id``; a rotated secret
  is honoured during its grace, then not;
- SSRF: loopback, metadata and a name resolving to loopback are refused without
  ``AIKI_ENDPOINTS_ALLOW_PRIVATE``, accepted with it;
- the runnable example (``examples/push_endpoint.py``) completes its run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import pytest

from aiki import Client, client
from aiki.platform.domain.settings import Settings
from aiki.worker_sdk.protocol import Activation, Delivery
from aiki.worker_sdk.protocol.webhooks import new_secret, signed_headers
from tests.e2e.procs import (
    REPO_ROOT,
    Child,
    ServerChild,
    WorkerProcs,
    all_of,
    free_port,
    pg_fetch,
    poll_until,
    poll_until_async,
)
from tests.e2e.push_endpoint_app import TrialInput, slow_v1, trial_v1
from tests.e2e.push_support import (
    PUSH_SERVER_ENV,
    PushApi,
    Tenant,
    endpoint_url,
    provision,
    server_of_ports,
    start_endpoint,
)
from tests.e2e.workflows import read_ledger, three_steps_v1

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]

FAILED_OUTCOMES = {"http_error", "timeout", "connection_error", "refused", "bad_answer"}


@dataclass
class Push:
    procs: WorkerProcs
    server: ServerChild
    tenant: Tenant
    api: PushApi
    client: Client

    async def endpoint_process(
        self,
        port: int,
        secret: str,
        *,
        fail_first: int = 0,
        block_task: str | None = None,
        fsync: bool = True,
        log_peers: bool = False,
    ) -> Child:
        """The endpoint app in a uvicorn process on ``port``, recording with the tenant's worker key."""
        return await start_endpoint(
            self.procs,
            port=port,
            server_url=self.server.url,
            api_key=self.tenant.worker_key,
            secret=secret,
            fail_first=fail_first,
            block_task=block_task,
            fsync=fsync,
            log_peers=log_peers,
        )


@pytest.fixture
async def push(procs: WorkerProcs) -> AsyncIterator[Push]:
    """An `aiki server` allowing private endpoint URLs, a fresh tenant on it, its admin's API and client."""
    srv = await procs.start_server(env=PUSH_SERVER_ENV)
    tenant = await provision(srv.url)
    api = PushApi(srv.url, tenant.admin_key)
    aiki_client = client(url=srv.url, api_key=tenant.admin_key)
    try:
        yield Push(procs, srv, tenant, api, aiki_client)
    finally:
        await aiki_client.close()
        await api.close()


def _ledger_starts(procs: WorkerProcs, run_id: str) -> Counter[str]:
    return Counter(line.task for line in read_ledger(procs.ledger) if line.run_id == run_id and line.event == "start")


def _tasks_recorded_once(detail: dict[str, object]) -> dict[str, dict[str, object]]:
    tasks = detail["tasks"]
    assert isinstance(tasks, list)
    addresses = [t["address"] for t in tasks]
    assert len(addresses) == len(set(addresses)), tasks
    assert all(t["status"] == "completed" for t in tasks), tasks
    return {t["name"]: t for t in tasks}


async def test_trial_completes_through_push_only(push: Push) -> None:
    port = free_port()
    endpoint_id, secret = await push.api.register(endpoint_url(port))
    assert secret.startswith("whsec_")
    await push.endpoint_process(port, secret)

    handle = await trial_v1.start(push.client, TrialInput(user_id="user-123"))
    await push.api.wait_status(handle.id, "awaiting_event", timeout=30, procs=push.procs)
    await handle.events.payment_received.send(42)
    view = await push.api.wait_status(handle.id, "completed", timeout=30, procs=push.procs)

    detail = await push.api.detail(handle.id)
    (child,) = detail["children"]
    assert child["status"] == "completed"
    assert view["output"] == f"paid 42 by user-123, receipt-{child['id']}"
    assert [s["status"] for s in detail["sleeps"]] == ["completed"]
    assert _tasks_recorded_once(detail)["activate-trial"]["attempts"] == 1
    assert _ledger_starts(push.procs, handle.id) == {"activate-trial": 1}
    assert _ledger_starts(push.procs, child["id"]) == {"send-receipt": 1}

    # No worker anywhere: every activation was a delivery, each answered 200 with an outcome.
    workers = (await push.api.http.get("/api/v1/workers")).json()["items"]
    assert workers == []
    deliveries = await push.api.settled_deliveries(handle.id)
    assert len(deliveries) >= 2, deliveries  # before the event, after it (and after the sleep, the child)
    assert {d["status_code"] for d in deliveries} == {200}, deliveries
    assert deliveries[-1]["outcome"] == "completed"
    assert all(d["endpoint_id"] == endpoint_id for d in deliveries)
    assert [d["outcome"] for d in await push.api.settled_deliveries(child["id"])] == ["completed"]
    health = (await push.api.endpoint(endpoint_id))["health"]
    assert health["breaker"] == "closed", health
    assert health["last_status_code"] == 200, health


async def test_500_twice_then_200_is_retried_and_tasks_are_recorded_once(push: Push) -> None:
    port = free_port()
    endpoint_id, secret = await push.api.register(endpoint_url(port))
    await push.endpoint_process(port, secret, fail_first=2)

    handle = await three_steps_v1.start(push.client, "x")
    view = await push.api.wait_status(handle.id, "completed", timeout=30, procs=push.procs)
    assert view["output"] == ["step-1-ok", "step-2-ok", "step-3-ok"]

    deliveries = await push.api.settled_deliveries(handle.id)
    assert [(d["outcome"], d["status_code"]) for d in deliveries] == [
        ("http_error", 500),
        ("http_error", 500),
        ("completed", 200),
    ], deliveries
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]
    # Each retry fences the one before it: a new revision per POST.
    assert len({d["revision"] for d in deliveries}) == 3
    # Backoff: base * 2**(attempt-1), jittered into its upper half (the server's defaults here).
    base_ms = Settings().endpoint_retry_base_ms
    assert deliveries[1]["created_at"] - deliveries[0]["created_at"] >= base_ms // 2, deliveries
    assert deliveries[2]["created_at"] - deliveries[1]["created_at"] >= base_ms, deliveries
    tasks = _tasks_recorded_once(await push.api.detail(handle.id))
    assert {name: t["attempts"] for name, t in tasks.items()} == {"step-1": 1, "step-2": 1, "step-3": 1}
    assert _ledger_starts(push.procs, handle.id) == {"step-1": 1, "step-2": 1, "step-3": 1}
    assert sum(1 for line in read_ledger(push.procs.ledger) if line.task == "fail-500") == 2
    health = (await push.api.endpoint(endpoint_id))["health"]
    assert health["breaker"] == "closed", health
    assert health["consecutive_failures"] == 0, health


async def test_endpoint_down_then_back_opens_then_closes_the_breaker(push: Push) -> None:
    port = free_port()  # nothing listens there yet
    endpoint_id, secret = await push.api.register(endpoint_url(port))
    handle = await three_steps_v1.start(push.client, "down")

    opened = await push.api.wait_endpoint(
        endpoint_id, lambda e: e["health"]["breaker"] == "open", timeout=30, what="the breaker to open"
    )
    assert opened["health"]["consecutive_failures"] >= 3, opened
    assert opened["health"]["last_error"], opened
    assert (await push.api.run(handle.id))["status"] != "completed"

    await push.endpoint_process(port, secret)
    await push.api.wait_status(handle.id, "completed", timeout=30, procs=push.procs)
    closed = await push.api.wait_endpoint(
        endpoint_id, lambda e: e["health"]["breaker"] == "closed", timeout=30, what="the breaker to close"
    )
    assert closed["health"]["consecutive_failures"] == 0, closed
    deliveries = await push.api.settled_deliveries(handle.id)
    outcomes = [d["outcome"] for d in deliveries]
    assert outcomes[-1] == "completed", deliveries
    assert outcomes.count("completed") == 1, deliveries
    assert set(outcomes[:-1]) == {"connection_error"}, deliveries
    assert _ledger_starts(push.procs, handle.id) == {"step-1": 1, "step-2": 1, "step-3": 1}


async def test_endpoint_killed_mid_activation_is_redelivered_without_duplicates(push: Push) -> None:
    port = free_port()
    _, secret = await push.api.register(endpoint_url(port))
    first = await push.endpoint_process(port, secret, block_task="step-2")
    handle = await three_steps_v1.start(push.client, "kill")

    await poll_until(lambda: _ledger_starts(push.procs, handle.id)["step-2"] == 1, timeout=30, what="step-2 to start")
    push.procs.kill(first)
    await push.endpoint_process(port, secret)
    view = await push.api.wait_status(handle.id, "completed", timeout=30, procs=push.procs)
    assert view["output"] == ["step-1-ok", "step-2-ok", "step-3-ok"]

    # step-1 was recorded before step-2 began: never run again. step-2 ran in both processes.
    starts = _ledger_starts(push.procs, handle.id)
    assert starts == {"step-1": 1, "step-2": 2, "step-3": 1}, starts
    tasks = _tasks_recorded_once(await push.api.detail(handle.id))
    assert tasks["step-1"]["attempts"] == 1, tasks
    assert tasks["step-3"]["attempts"] == 1, tasks
    outcomes = [d["outcome"] for d in await push.api.settled_deliveries(handle.id)]
    assert outcomes.count("completed") == 1, outcomes
    assert outcomes[-1] == "completed", outcomes
    assert outcomes[0] in FAILED_OUTCOMES, outcomes


async def test_an_activation_past_its_time_limit_is_handed_back_and_delivered_again(push: Push) -> None:
    port = free_port()
    # A 1 s timeout: the endpoint's time limit is under it; the workflow's four 0.4 s tasks need 1.6 s.
    _, secret = await push.api.register(endpoint_url(port), timeout_ms=1_000)
    await push.endpoint_process(port, secret)
    handle = await slow_v1.start(push.client, "slow")
    view = await push.api.wait_status(handle.id, "completed", timeout=30, procs=push.procs)
    assert view["output"] == ["slow-1-ok", "slow-2-ok", "slow-3-ok", "slow-4-ok"]

    outcomes = [d["outcome"] for d in await push.api.settled_deliveries(handle.id)]
    assert "handed_back" in outcomes, outcomes
    assert outcomes[-1] == "completed", outcomes
    assert set(outcomes) <= {"handed_back", "completed"}, outcomes
    # What finished was recorded and never run again; a task cut off by the limit ran again.
    lines = [line for line in read_ledger(push.procs.ledger) if line.run_id == handle.id]
    done = Counter(line.task for line in lines if line.event == "done")
    assert done == {f"slow-{i}": 1 for i in range(1, 5)}, lines
    tasks = _tasks_recorded_once(await push.api.detail(handle.id))
    assert sorted(tasks) == [f"slow-{i}" for i in range(1, 5)]


async def test_two_replicas_deliver_a_burst_each_activation_once(push: Push) -> None:
    port = free_port()
    _, secret = await push.api.register(endpoint_url(port), concurrency=40)
    await push.endpoint_process(port, secret, fsync=False, log_peers=True)
    # The second replica starts with the endpoint registered: its deliverer is up from the start
    # (one started before would learn of the endpoint at its next reload, within 2 s).
    second = await push.procs.start_server(env=PUSH_SERVER_ENV)
    other_client = client(url=second.url, api_key=push.tenant.admin_key)
    try:
        clients = [push.client, other_client]
        handles = await all_of((three_steps_v1.start(clients[i % 2], f"burst-{i}") for i in range(200)), limit=50)
        outputs = await all_of((h.result() for h in handles), limit=50)
    finally:
        await other_client.close()
    assert all(o == ["step-1-ok", "step-2-ok", "step-3-ok"] for o in outputs)
    # Both replicas delivered (the endpoint logged each request's peer port; the connections are
    # still open, so each port names the server process that holds it).
    owners = server_of_ports({"first": push.server.pid, "second": second.pid}, port)
    peers = [int(line.event) for line in read_ledger(push.procs.ledger) if line.task == "peer"]
    by_server = Counter(owners.get(p, "unknown") for p in peers)
    assert by_server["first"] > 0, by_server
    assert by_server["second"] > 0, by_server

    run_ids = [h.id for h in handles]
    db = push.procs.db_url
    # Each delivery's row is written when its answer arrives, just after the run completed.
    settled = "SELECT count(*) AS n FROM endpoint_deliveries WHERE run_id = ANY($1) AND outcome = 'completed'"
    await poll_until_async(
        lambda: pg_fetch(db, settled, run_ids),
        lambda rows: rows[0]["n"] >= len(run_ids),
        timeout=30,
        what="every completed delivery written",
    )
    twice = await pg_fetch(
        db,
        "SELECT run_id, revision, count(*) AS n FROM endpoint_deliveries WHERE run_id = ANY($1) "
        "GROUP BY run_id, revision HAVING count(*) > 1",
        run_ids,
    )
    assert not twice, [dict(r) for r in twice]
    completed = await pg_fetch(
        db,
        "SELECT run_id, count(*) AS n FROM endpoint_deliveries WHERE run_id = ANY($1) AND outcome = 'completed' "
        "GROUP BY run_id",
        run_ids,
    )
    assert {r["run_id"]: r["n"] for r in completed} == dict.fromkeys(run_ids, 1)
    tasks = await pg_fetch(
        db, "SELECT run_id, name, count(*) AS n FROM tasks WHERE run_id = ANY($1) GROUP BY 1, 2", run_ids
    )
    assert len(tasks) == 600
    assert all(r["n"] == 1 for r in tasks)
    ran = Counter((line.run_id, line.task) for line in read_ledger(push.procs.ledger) if line.event == "start")
    assert all(ran[(rid, f"step-{i}")] == 1 for rid in run_ids for i in (1, 2, 3))


# -- signatures -------------------------------------------------------------------------------


def _delivery(workflow: str = "no-such-workflow") -> bytes:
    activation = Activation(
        run_id="run-that-does-not-exist",
        revision=1,
        workflow=workflow,
        version="1.0.0",
        attempt=1,
        input=msgspec.Raw(b'"x"'),
        lease_ttl_ms=30_000,
    )
    delivery = Delivery(type="activation", endpoint_id="ep", attempt=1, time_limit_ms=10_000, activation=activation)
    return msgspec.json.encode(delivery)


async def test_signatures_are_verified_by_the_endpoint_process(procs: WorkerProcs) -> None:
    secret = new_secret()
    port = free_port()
    # Nothing here reaches the server: every request is refused, or names an unknown version, first.
    await start_endpoint(procs, port=port, server_url="http://127.0.0.1:9", api_key="unused", secret=secret)
    body = _delivery()
    now = int(time.time())
    async with httpx.AsyncClient(base_url=endpoint_url(port), timeout=10) as http:

        async def post(content: bytes, headers: dict[str, str]) -> httpx.Response:
            return await http.post("", content=content, headers={**headers, "content-type": "application/json"})

        good = signed_headers([secret], "msg-1", now, body)
        assert (await post(body, good)).status_code == 404  # verified; the version is unknown here
        assert (await post(body, good)).status_code == 401  # the same webhook-id again: a replay

        tampered = body.replace(b"run-that-does-not-exist", b"run-that-does-not-exisT")
        assert (await post(tampered, signed_headers([secret], "msg-2", now, body))).status_code == 401
        assert (await post(body, signed_headers([new_secret()], "msg-3", now, body))).status_code == 401
        assert (await post(body, signed_headers([secret], "msg-4", now - 600, body))).status_code == 401
        unsigned = {k: v for k, v in signed_headers([secret], "msg-5", now, body).items() if k != "webhook-signature"}
        assert (await post(body, unsigned)).status_code == 401
        # Two signatures, one of them good (a rotation): accepted.
        both = signed_headers([new_secret(), secret], "msg-6", now, body)
        assert (await post(body, both)).status_code == 404
        # Signed but not a delivery: 400.
        assert (await post(b'{"nope": 1}', signed_headers([secret], "msg-7", now, b'{"nope": 1}'))).status_code == 400


async def test_rotated_secret_is_honoured_during_its_grace_then_not(push: Push) -> None:
    port = free_port()
    endpoint_id, old_secret = await push.api.register(endpoint_url(port))
    old_holder = await push.endpoint_process(port, old_secret)
    before = await three_steps_v1.start(push.client, "before")
    await push.api.wait_status(before.id, "completed", timeout=30, procs=push.procs)

    grace_ms = 3_000
    rotated, new_secret_value = await push.api.rotate(endpoint_id, grace_ms)
    assert new_secret_value != old_secret
    assert new_secret_value.startswith("whsec_")
    expires_at = rotated["previous_secret_expires_at"]
    assert expires_at is not None

    during = await three_steps_v1.start(push.client, "during")
    await push.api.wait_status(during.id, "completed", timeout=30, procs=push.procs)
    (delivered,) = await push.api.settled_deliveries(during.id)
    assert delivered["outcome"] == "completed", delivered
    assert delivered["created_at"] < expires_at, delivered

    await poll_until(lambda: time.time() * 1000 > expires_at + 50, timeout=grace_ms / 1000 + 5, what="the grace to end")
    after = await three_steps_v1.start(push.client, "after")
    refused = await poll_until_async(
        lambda: push.api.deliveries(after.id),
        lambda ds: any(d["status_code"] == 401 for d in ds),
        timeout=30,
        what="a 401 from the endpoint holding the old secret",
    )
    assert all(d["outcome"] == "http_error" for d in refused), refused
    assert (await push.api.run(after.id))["status"] != "completed"

    # The endpoint gets the new secret: the run goes through.
    push.procs.kill(old_holder)
    await push.endpoint_process(port, new_secret_value)
    await push.api.wait_status(after.id, "completed", timeout=30, procs=push.procs)
    assert _ledger_starts(push.procs, after.id) == {"step-1": 1, "step-2": 1, "step-3": 1}


# -- SSRF ---------------------------------------------------------------------------------------


async def test_private_urls_are_refused_unless_the_server_allows_them(procs: WorkerProcs) -> None:
    strict = await procs.start_server()
    tenant = await provision(strict.url)
    api = PushApi(strict.url, tenant.admin_key)
    try:
        for url, reason in [
            ("http://127.0.0.1:9/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://localhost:9/", "loopback"),  # a name that resolves to a loopback address
            ("http://10.1.2.3/", "private"),
        ]:
            refused = await api.create_endpoint(url)
            assert refused.status_code == 422, (url, refused.text)
            assert reason in refused.text, refused.text
            assert "AIKI_ENDPOINTS_ALLOW_PRIVATE" in refused.text, refused.text
        assert (await api.http.get("/api/v1/endpoints")).json()["items"] == []
    finally:
        await api.close()

    lenient = await procs.start_server(env={"AIKI_ENDPOINTS_ALLOW_PRIVATE": "1"})
    api = PushApi(lenient.url, tenant.admin_key)
    try:
        for i, url in enumerate(("http://127.0.0.1:9/", "http://localhost:9/", "http://169.254.169.254/")):
            made = await api.create_endpoint(url, versions=[["push-ssrf", f"1.0.{i}"]])
            assert made.status_code == 201, (url, made.text)
    finally:
        await api.close()


# -- the example ----------------------------------------------------------------------------------


def test_the_runnable_example_completes_its_run_through_an_endpoint() -> None:
    """``python examples/push_endpoint.py``, as the README says: server, endpoint and run in one process."""
    done = subprocess.run(
        [sys.executable, "examples/push_endpoint.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIKI_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": paid\n" in done.stdout, done.stdout + done.stderr
    assert "): completed" in done.stdout, done.stdout
