"""The server delivers ready runs to push endpoints (``aiki.platform.runtime.push_loop``): signed
POSTs, retries with backoff, the circuit breaker, the concurrency limit across replicas, lease
keeping, SSRF re-check at delivery time, and a clean stop. Both databases.

Endpoints are registered with the endpoints service (``create_endpoint``). The endpoint is the SDK's
``endpoint(...)`` app behind a fault-injecting front (:class:`Receiver`), served by uvicorn on
loopback: the front verifies the Standard Webhooks signature itself, counts, and either answers
as the test says (500s, garbage, a stall) or passes the delivery on to the real app, which
executes the run and records through the worker protocol fenced by the delivered revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from aiki import Run, client, endpoint, event, task, workflow
from aiki.api.server import AikiServer
from aiki.platform.db.engine import Database
from aiki.platform.db.executor_store import executor_store
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.errors import RunNotFound
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.settings import Settings
from aiki.platform.secret_box import SecretBox
from aiki.platform.services import deliveries, endpoints, executions
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import webhooks
from tests.conftest import _LoopbackUvicorn

from .helpers import API, LEDGER, new_key, task_address

NS = DEFAULT_NAMESPACE_ID
WAIT_S = 30.0
STEP = "push-delivery-step"


@task(name=STEP)
async def push_step(key: str) -> str:
    LEDGER.hit(STEP, key)
    return f"done:{key}"


push_wf = workflow("push-delivery-wf")


@push_wf.v("1")
async def push_v1(run: Run, key: str) -> str:
    return await push_step.start(run, key)


trial_wf = workflow("push-delivery-trial")


@trial_wf.v("1", events={"paid": event()})
async def trial_v1(run: Run, key: str) -> str:
    """The quick start's shape: a task, a durable sleep, an event, a child run."""
    first = await push_step.start(run, key)
    await run.sleep(timedelta(milliseconds=200), name="trial")
    paid = await run.events.paid.wait(timeout=timedelta(minutes=5))
    child = await push_v1.start_as_child(run, f"{key}-child")
    done = await child.wait_for_status("completed")
    return f"{first}|{paid.data}|{done.output}"


@pytest.fixture
def transport() -> str:
    """The SDK client here starts runs and records for the endpoint in-process: one transport."""
    return "port"


# -- the endpoint and its front -----------------------------------------------------------------

Forward = Callable[[], Awaitable[tuple[int, bytes]]]
Behaviour = Callable[["Receiver", p.Delivery, Forward], Awaitable[tuple[int, bytes]]]


async def forward(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
    """Pass the delivery on to the real endpoint app."""
    return await real()


class Receiver:
    """The SDK's endpoint app behind a front that verifies, counts and may answer for it."""

    def __init__(self, aiki_client: Any, behave: Behaviour | None = None, port: int = 0) -> None:
        self.client = aiki_client
        self.behave = behave or forward
        self.secret = ""
        self.real: Any = None
        self.deliveries: list[tuple[dict[str, str], p.Delivery]] = []
        self.refused = 0
        self.active = 0
        self.max_active = 0
        self.per_run: Counter[str] = Counter()
        self.arrived = asyncio.Event()
        self._socket = socket.create_server(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/push"
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=0.1,
        )
        self._server = _LoopbackUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    def serve_with(self, secret: str) -> None:
        """The endpoint's signing secret is known (it was registered): the real app takes it too."""
        self.secret = secret
        self.real = endpoint(workflows=[push_v1, trial_v1], client=self.client, secret=secret)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            webhooks.verify([self.secret], headers, body, int(time.time()))
        except webhooks.WebhookVerificationError:
            self.refused += 1
            await _respond(send, 401, b'{"title": "bad signature"}')
            return
        delivery = msgspec.json.decode(body, type=p.Delivery)
        self.deliveries.append((headers, delivery))
        self.per_run[delivery.activation.run_id] += 1
        self.arrived.set()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            status, answer = await self.behave(self, delivery, lambda: self._call_real(scope, body))
        finally:
            self.active -= 1
        await _respond(send, status, answer)

    async def _call_real(self, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.real(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    async def start(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        await asyncio.wait_for(self._server.ready.wait(), 10)
        return self

    async def stop(self) -> None:
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._task


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def answer(d: p.Delivery, outcome: str) -> bytes:
    a = d.activation
    return msgspec.json.encode(p.DeliveryAnswer(outcome=outcome, run_id=a.run_id, revision=a.revision))  # type: ignore[arg-type]


# -- the server ---------------------------------------------------------------------------------

SETTINGS = {
    "lease_ttl_ms": 3_000,
    "heartbeat_interval_ms": 300,
    "endpoints_allow_private": True,
    "endpoint_retry_base_ms": 100,
    "endpoint_retry_max_ms": 400,
    "endpoint_max_attempts": 5,
    "endpoint_breaker_threshold": 5,
    "endpoint_breaker_cooldown_ms": 200,
    "endpoint_breaker_cooldown_max_ms": 800,
}
SERVER_KEY = "push-delivery-test-server-secret"


class Push:
    """An embedded server (its runtime started) with an SDK client, on the test's database."""

    def __init__(self, db_url: str, **settings: Any) -> None:
        self.server = AikiServer(Database(db_url, migrate=False), Settings(**{**SETTINGS, **settings}))
        self.svc = self.server.services
        self.svc.secret_box = SecretBox(SERVER_KEY)
        self.client = client(handler=self.server.handler)

    async def start(self) -> Push:
        await self.server.runtime.start()
        return self

    async def close(self) -> None:
        await self.client.close()
        await self.server.runtime.stop()
        await self.server.db.dispose()

    async def add_endpoint(
        self, receiver: Receiver, *, url: str | None = None, concurrency: int = 10, timeout_ms: int = 5_000
    ) -> str:
        """Register ``receiver`` (at ``url``, else its own) as the endpoint of ``push_v1`` and ``trial_v1``."""
        created = await endpoints.create_endpoint(
            self.svc,
            NS,
            p.EndpointCreate(
                url=url or receiver.url,
                versions=[p.VersionRef("push-delivery-wf", "1"), p.VersionRef("push-delivery-trial", "1")],
                concurrency=concurrency,
                timeout_ms=timeout_ms,
            ),
        )
        receiver.serve_with(created.secret)
        return created.endpoint.id

    async def set_enabled(self, endpoint_id: str, enabled: bool) -> None:
        await endpoints.update_endpoint(self.svc, NS, endpoint_id, p.EndpointUpdate(enabled=enabled))

    async def endpoint(self, endpoint_id: str) -> Any:
        return await endpoints.get_endpoint(self.svc, NS, endpoint_id)

    async def start_runs(self, count: int) -> dict[str, str]:
        """Start ``count`` runs: run id → key."""
        keys = [new_key() for _ in range(count)]
        handles = await asyncio.gather(*(push_v1.start(self.client, key) for key in keys))
        return {h.id: key for h, key in zip(handles, keys, strict=True)}

    async def wait_status(self, run_ids: Any, status: str = "completed") -> None:
        """Wait for each run to reach ``status``; a terminal one also for the delivery row of its
        last activation (written when the endpoint's answer reaches the server, a moment after the
        run's status changed)."""
        handles = [await push_v1.get_handle(self.client, run_id) for run_id in run_ids]
        await asyncio.gather(*(h.wait_for_status(status, timeout=WAIT_S) for h in handles))
        if status in ("completed", "failed"):
            for run_id in run_ids:
                await self.wait_delivered(run_id, status)

    async def wait_delivered(self, run_id: str, outcome: str = "completed") -> None:
        """Wait until a delivery of ``run_id`` is recorded with ``outcome``."""

        async def recorded() -> bool:
            return any(x.outcome == outcome for x in await deliveries.run_deliveries(self.svc, NS, run_id))

        await until(recorded, f"a {outcome} delivery row of run {run_id}")

    async def output(self, run_id: str) -> str:
        return await (await push_v1.get_handle(self.client, run_id)).result()


@pytest.fixture
async def make_push(db_url: str) -> AsyncIterator[Callable[..., Awaitable[Push]]]:
    made: list[Push] = []

    async def make(**settings: Any) -> Push:
        push = Push(db_url, **settings)
        made.append(push)
        return await push.start()

    try:
        yield make
    finally:
        for push in reversed(made):
            await push.close()


@contextlib.asynccontextmanager
async def receiving(push: Push, behave: Behaviour | None = None, port: int = 0) -> AsyncIterator[Receiver]:
    receiver = await Receiver(push.client, behave, port).start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    """Wait (re-checking every few ms) until ``check()`` holds; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def assert_done_once(push: Push, runs: dict[str, str]) -> None:
    """Each run completed with its task's output, the task executed once."""
    for run_id, key in runs.items():
        assert await push.output(run_id) == f"done:{key}"
        assert LEDGER.count(STEP, key) == 1, key


# -- tests --------------------------------------------------------------------------------------


async def test_each_run_is_delivered_signed_and_completed(make_push: Any) -> None:
    push = await make_push()
    async with receiving(push) as receiver:
        endpoint_id = await push.add_endpoint(receiver)
        runs = await push.start_runs(20)
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    assert receiver.refused == 0
    assert sorted(receiver.per_run) == sorted(runs)
    assert set(receiver.per_run.values()) == {1}
    for headers, delivery in receiver.deliveries:
        a = delivery.activation
        assert headers[webhooks.ID_HEADER] == f"{a.run_id}.{a.revision}"
        assert abs(int(headers[webhooks.TIMESTAMP_HEADER]) - time.time()) < 60
        assert (delivery.endpoint_id, delivery.attempt) == (endpoint_id, 1)
        assert 0 < delivery.time_limit_ms < 5_000
        assert delivery.payload_max_bytes == push.svc.settings.max_payload_bytes
    for run_id in runs:
        [attempt] = await deliveries.run_deliveries(push.svc, NS, run_id)
        assert (attempt.outcome, attempt.attempt, attempt.status_code, attempt.endpoint_id) == (
            "completed",
            1,
            200,
            endpoint_id,
        )
    latest = await deliveries.endpoint_deliveries(push.svc, NS, endpoint_id, limit=5)
    assert len(latest) == 5
    assert [x.created_at for x in latest] == sorted((x.created_at for x in latest), reverse=True)
    health = (await push.endpoint(endpoint_id)).health
    assert (health.breaker, health.last_status_code, health.last_error) == ("closed", 200, None)
    assert health.last_delivery_at is not None
    with pytest.raises(RunNotFound):
        await deliveries.run_deliveries(push.svc, NS, new_id())


async def test_a_run_with_a_sleep_an_event_and_a_child_completes_through_push_only(make_push: Any) -> None:
    push = await make_push()
    async with receiving(push) as receiver:
        await push.add_endpoint(receiver)
        key = new_key()
        handle = await trial_v1.start(push.client, key)
        await handle.wait_for_status("awaiting_event", timeout=WAIT_S)
        await handle.events.paid.send("card")
        assert await asyncio.wait_for(handle.result(), WAIT_S) == f"done:{key}|card|done:{key}-child"
        await push.wait_delivered(handle.id)
    assert LEDGER.count(STEP, key) == 1
    assert LEDGER.count(STEP, f"{key}-child") == 1
    # One delivery per activation: the start, after the sleep, after the event, after the child.
    attempts = await deliveries.run_deliveries(push.svc, NS, handle.id)
    assert [x.outcome for x in attempts] == ["suspended", "suspended", "suspended", "completed"]
    assert len({x.revision for x in attempts}) == 4
    assert receiver.refused == 0


async def test_a_failing_delivery_is_retried_with_backoff_and_recorded_once(
    make_push: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiki")
    push = await make_push()

    async def fail_twice(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        if r.per_run[d.activation.run_id] <= 2:
            return 500, b'{"title": "boom"}'
        return await real()

    async with receiving(push, fail_twice) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        [run_id] = runs
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert [(x.attempt, x.outcome, x.status_code) for x in attempts] == [
        (1, "http_error", 500),
        (2, "http_error", 500),
        (3, "completed", 200),
    ]
    assert "boom" in (attempts[0].error or "")
    # Each attempt is a new activation: its revision moved on, fencing the one before.
    revisions = [x.revision for x in attempts]
    assert revisions == sorted(set(revisions))
    assert [d.activation.revision for _, d in receiver.deliveries] == revisions
    assert [d.attempt for _, d in receiver.deliveries] == [1, 2, 3]
    assert len({h[webhooks.ID_HEADER] for h, _ in receiver.deliveries}) == 3
    # Backoff: base 100 ms then 200 ms nominal, jittered into their upper half.
    gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 50, gaps
    assert gaps[1] >= 100, gaps
    asgi = httpx.ASGITransport(app=push.server.handler)
    async with httpx.AsyncClient(transport=asgi, base_url="http://aiki") as http:
        detail = (await http.get(f"{API}/runs/{run_id}/detail")).json()
    assert [t["status"] for t in detail["tasks"]] == ["completed"]
    # The failures were logged, never a secret or a signature.
    assert "boom" in caplog.text
    assert receiver.secret not in caplog.text
    assert receiver.secret.removeprefix("whsec_") not in caplog.text
    signatures = [h[webhooks.SIGNATURE_HEADER] for h, _ in receiver.deliveries]
    assert not any(sig.removeprefix("v1,") in caplog.text for sig in signatures)


async def test_the_breaker_opens_while_the_endpoint_is_down_and_closes_after_a_probe(make_push: Any) -> None:
    push = await make_push(endpoint_breaker_threshold=3, endpoint_max_attempts=3)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    # Registered, but nothing listens on its port yet: connections are refused.
    down = Receiver(push.client, port=port)
    endpoint_id = await push.add_endpoint(down)
    await down.stop()
    runs = await push.start_runs(4)

    async def opened() -> bool:
        return (await push.endpoint(endpoint_id)).health.breaker == "open"

    await until(opened, "the breaker to open")
    async with receiving(push, port=port) as receiver:
        receiver.serve_with(down.secret)
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    health = (await push.endpoint(endpoint_id)).health
    assert (health.breaker, health.consecutive_failures) == ("closed", 0)
    outcomes = Counter([x.outcome for run_id in runs for x in await deliveries.run_deliveries(push.svc, NS, run_id)])
    assert outcomes["completed"] == 4
    assert outcomes["connection_error"] >= 3


async def test_the_concurrency_limit_holds(make_push: Any) -> None:
    push = await make_push()

    async def slow(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await asyncio.sleep(0.03)  # the endpoint's work, so that deliveries overlap
        return await real()

    async with receiving(push, slow) as receiver:
        await push.add_endpoint(receiver, concurrency=3)
        runs = await push.start_runs(30)
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    assert receiver.max_active == 3


async def test_stop_gives_back_the_runs_it_holds(make_push: Any) -> None:
    push = await make_push()
    release = asyncio.Event()

    async def hang(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await release.wait()
        return await real()

    async with receiving(push, hang) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(3)

        async def all_arrived() -> bool:
            return len(receiver.per_run) == 3

        await until(all_arrived, "three deliveries in flight")
        await push.server.runtime.stop()
        for run_id in runs:
            view = await push.client.get_run(run_id)
            assert (view.status, view.recoveries) == ("queued", 0), view
        release.set()  # the endpoint's late writes are fenced: the runs stay queued
    for run_id, key in runs.items():
        assert (await push.client.get_run(run_id)).status == "queued"
        assert LEDGER.count(STEP, key) <= 1


async def test_a_disabled_endpoint_stops_and_gives_back_its_runs(make_push: Any) -> None:
    push = await make_push()
    release = asyncio.Event()

    async def hang(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await release.wait()
        return await real()

    async with receiving(push, hang) as receiver:
        endpoint_id = await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        await asyncio.wait_for(receiver.arrived.wait(), WAIT_S)
        await push.set_enabled(endpoint_id, False)
        await push.wait_status(runs, "queued")
        release.set()
    [run_id] = runs
    assert (await push.client.get_run(run_id)).status == "queued"


async def test_a_run_paused_while_its_retry_waits_is_released_and_resumes(make_push: Any) -> None:
    push = await make_push(endpoint_retry_base_ms=400, endpoint_retry_max_ms=400)
    failed = asyncio.Event()

    async def fail_first(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        if r.per_run[d.activation.run_id] == 1:
            failed.set()
            return 503, b'{"title": "later"}'
        return await real()

    async with receiving(push, fail_first) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        [run_id] = runs
        await asyncio.wait_for(failed.wait(), WAIT_S)
        handle = await push_v1.get_handle(push.client, run_id)
        await handle.pause("hold on")  # while the retry waits out its backoff

        async def released() -> bool:
            rows = await push.svc.db.executor_store(NS).held_states([run_id])
            return rows[0]["lease_owner"] is None

        await until(released, "the paused run to be released")
        assert (await push.client.get_run(run_id)).status == "paused"
        assert receiver.per_run[run_id] == 1
        await handle.resume()
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    assert (await push.client.get_run(run_id)).recoveries == 0


async def test_a_deleted_endpoint_s_runs_go_back_to_the_queue(make_push: Any) -> None:
    push = await make_push()
    release = asyncio.Event()

    async def hang(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await release.wait()
        return await real()

    async with receiving(push, hang) as receiver:
        endpoint_id = await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        await asyncio.wait_for(receiver.arrived.wait(), WAIT_S)
        await endpoints.delete_endpoint(push.svc, NS, endpoint_id)
        await push.wait_status(runs, "queued")

        async def stopped() -> bool:
            loop = push.server.runtime.push
            return loop is not None and endpoint_id not in loop.deliverers

        await until(stopped, "the deliverer to stop")
        release.set()  # the endpoint's writes are fenced by the release's revision
    [run_id] = runs
    view = await push.client.get_run(run_id)
    assert (view.status, view.recoveries) == ("queued", 0)
    assert await deliveries.run_deliveries(push.svc, NS, run_id) == []


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery_time(make_push: Any) -> None:
    push = await make_push(endpoints_allow_private=False, endpoint_max_attempts=2)
    answers = {"push.example": ["93.184.215.14"]}  # public when it is registered ...

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    push.svc.url_resolver = resolve
    async with receiving(push) as receiver:
        endpoint_id = await push.add_endpoint(receiver, url=f"http://push.example:{receiver.port}/push")
        answers["push.example"] = ["127.0.0.1"]  # ... and rebound to loopback before a delivery
        runs = await push.start_runs(1)
        [run_id] = runs

        async def refused_twice() -> bool:
            return len(await deliveries.run_deliveries(push.svc, NS, run_id)) >= 2

        await until(refused_twice, "two refused deliveries")
        await push.wait_status(runs, "queued")
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert {x.outcome for x in attempts} == {"refused"}
    assert "loopback" in (attempts[0].error or "")
    assert receiver.deliveries == []
    health = (await push.endpoint(endpoint_id)).health
    assert "loopback" in (health.last_error or "")


# Several server processes share PostgreSQL only.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_two_replicas_deliver_each_activation_once(make_push: Any, db_url: str) -> None:
    first = await make_push()
    second = await make_push()
    async with receiving(first) as receiver:
        endpoint_id = await first.add_endpoint(receiver, concurrency=20)
        second.svc.hub.notify(endpoints.WAKE_KEY)  # as NOTIFY or Redis would, or its next reload
        started = await asyncio.gather(first.start_runs(200), second.start_runs(200))
        runs = {**started[0], **started[1]}
        await first.wait_status(runs)
        replicas = [push.server.runtime.push for push in (first, second)]
        posts = [r.deliverers[endpoint_id].posts for r in replicas if r is not None]
    await assert_done_once(first, runs)
    ids = [headers[webhooks.ID_HEADER] for headers, _ in receiver.deliveries]
    assert len(ids) == len(set(ids))
    assert set(receiver.per_run) == set(runs)
    assert receiver.max_active <= 20
    rows = [x for run_id in runs for x in await deliveries.run_deliveries(first.svc, NS, run_id)]
    assert len(rows) == len(ids)
    assert len({(x.run_id, x.revision) for x in rows}) == len(rows)
    assert sum(posts) == len(ids)
    assert min(posts) > 0, posts  # both replicas delivered


# Several server processes share PostgreSQL only.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_the_concurrency_limit_holds_across_replicas(make_push: Any, db_url: str) -> None:
    first = await make_push()
    second = await make_push()

    async def slow(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await asyncio.sleep(0.02)  # the endpoint's work, so that deliveries overlap
        return await real()

    async with receiving(first, slow) as receiver:
        endpoint_id = await first.add_endpoint(receiver, concurrency=4)
        second.svc.hub.notify(endpoints.WAKE_KEY)
        started = await asyncio.gather(first.start_runs(40), second.start_runs(40))
        runs = {**started[0], **started[1]}
        await first.wait_status(runs)
        replicas = [push.server.runtime.push for push in (first, second)]
        posts = [r.deliverers[endpoint_id].posts for r in replicas if r is not None]
    await assert_done_once(first, runs)
    assert receiver.max_active == 4
    assert min(posts) > 0, posts


async def test_a_run_handed_back_is_delivered_again_with_what_it_recorded(make_push: Any) -> None:
    push = await make_push()

    async def hand_back_once(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        a = d.activation
        if r.per_run[a.run_id] > 1:
            assert [t.name for t in a.tasks] == [STEP]  # what the first activation recorded
            return await real()
        key = msgspec.json.decode(a.input)
        record = p.RecordTask(
            run_id=a.run_id,
            revision=a.revision,
            address=push_step_address(key),
            seq=0,
            name=STEP,
            status="completed",
            attempts=1,
            output=f"done:{key}",
        )
        [result] = await connect(r.client).run_commands([record])
        assert result.problem is None
        return 200, answer(d, "handed_back")

    async with receiving(push, hand_back_once) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        [(run_id, key)] = runs.items()
        await push.wait_status(runs)
    assert await push.output(run_id) == f"done:{key}"
    assert LEDGER.count(STEP, key) == 0  # replayed from the record: never executed again
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert [(x.attempt, x.outcome) for x in attempts] == [(1, "handed_back"), (1, "completed")]
    assert attempts[1].revision > attempts[0].revision
    assert (await push.client.get_run(run_id)).recoveries == 0


def push_step_address(key: str) -> str:
    return task_address(STEP, key)


async def test_the_lease_is_kept_while_the_endpoint_works(make_push: Any) -> None:
    # A lease of 0.6 s, a delivery of 1.5 s: only the server's heartbeats keep the run.
    push = await make_push(lease_ttl_ms=600, heartbeat_interval_ms=150)

    async def slow(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        await asyncio.sleep(1.5)
        return await real()

    async with receiving(push, slow) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    [run_id] = runs
    [attempt] = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert attempt.outcome == "completed"
    assert (await push.client.get_run(run_id)).recoveries == 0


async def test_a_delivery_that_times_out_is_fenced_and_tried_again(make_push: Any) -> None:
    push = await make_push()
    late: list[p.CommandResult] = []
    first_done = asyncio.Event()

    async def stall_first(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        a = d.activation
        if r.per_run[a.run_id] > 1:
            return await real()
        await asyncio.sleep(2.0)  # beyond the endpoint's timeout: the server gave up on it
        done = p.Complete(run_id=a.run_id, revision=a.revision, output="late")
        late.extend(await connect(r.client).run_commands([done]))
        first_done.set()
        return 200, answer(d, "completed")

    async with receiving(push, stall_first) as receiver:
        await push.add_endpoint(receiver, timeout_ms=1_000)
        runs = await push.start_runs(1)
        await push.wait_status(runs)
        await asyncio.wait_for(first_done.wait(), WAIT_S)
    [run_id] = runs
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert [(x.attempt, x.outcome) for x in attempts] == [(1, "timeout"), (2, "completed")]
    [refused] = late
    assert refused.problem is not None  # the old activation was fenced by the retry's revision
    await assert_done_once(push, runs)


async def test_a_bad_answer_counts_as_a_failure(make_push: Any) -> None:
    push = await make_push()

    async def garbage_once(r: Receiver, d: p.Delivery, real: Forward) -> tuple[int, bytes]:
        if r.per_run[d.activation.run_id] == 1:
            return 200, b"<html>hello</html>"
        return await real()

    async with receiving(push, garbage_once) as receiver:
        await push.add_endpoint(receiver)
        runs = await push.start_runs(1)
        await push.wait_status(runs)
    await assert_done_once(push, runs)
    [run_id] = runs
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert [(x.outcome, x.status_code) for x in attempts] == [("bad_answer", 200), ("completed", 200)]


async def test_an_answer_is_recorded_and_a_run_left_held_released_in_one_store_call(make_push: Any) -> None:
    push = await make_push()
    created = await endpoints.create_endpoint(
        push.svc,
        NS,
        p.EndpointCreate(
            url="http://127.0.0.1:9/push", versions=[p.VersionRef("push-delivery-wf", "1")], enabled=False
        ),
    )
    owner = f"endpoint:{created.endpoint.id}"
    runs = await push.start_runs(1)
    [run_id] = runs
    request = p.ClaimRequest(worker_id=owner, versions=[p.VersionRef("push-delivery-wf", "1")], wait_ms=5_000)
    [a] = await executions.claim(push.svc, NS, request)
    store = executor_store(push.svc.db, NS)

    def attempt_row(n: int) -> dict[str, Any]:
        return {
            "endpoint_id": created.endpoint.id,
            "run_id": run_id,
            "revision": a.revision,
            "attempt": n,
            "outcome": "handed_back",
            "status_code": 200,
            "latency_ms": 5,
            "error": None,
            "created_at": now_ms(),
        }

    assert await store.delivered(run_id, a.revision, owner, "handed back", now_ms(), attempt_row(1)) == (True, True)
    view = await push.client.get_run(run_id)
    assert (view.status, view.revision, view.recoveries) == ("queued", a.revision + 1, 0)
    # Released once: the run is no longer held at that revision.
    assert await store.delivered(run_id, a.revision, owner, "again", now_ms(), attempt_row(2)) == (True, False)
    await endpoints.delete_endpoint(push.svc, NS, created.endpoint.id)
    assert await store.delivered(run_id, a.revision, owner, "gone", now_ms(), attempt_row(3)) == (False, False)
    assert await deliveries.run_deliveries(push.svc, NS, run_id) == []  # deleted with their endpoint


async def test_a_rotated_secret_signs_beside_the_new_one_during_its_grace(make_push: Any) -> None:
    push = await make_push()
    async with receiving(push) as receiver:
        endpoint_id = await push.add_endpoint(receiver)
        await endpoints.rotate_secret(push.svc, NS, endpoint_id, grace_ms=60_000)
        await until(lambda: signing_with(push, endpoint_id, 2), "the deliverer to load the rotation")
        # The endpoint still holds the old secret: deliveries carry a signature under each.
        runs = await push.start_runs(1)
        await push.wait_status(runs)
        [(headers, _)] = receiver.deliveries
        assert len(headers[webhooks.SIGNATURE_HEADER].split()) == 2
        # Rotated again without grace: the old one no longer signs, the endpoint refuses (401) ...
        newest = await endpoints.rotate_secret(push.svc, NS, endpoint_id, grace_ms=0)
        await until(lambda: signing_with(push, endpoint_id, 1), "the deliverer to load the rotation")
        later = await push.start_runs(1)

        async def refused() -> bool:
            return receiver.refused > 0

        await until(refused, "a delivery refused under the old secret")
        # ... until it is given the new one: the delivery is retried, and signed under it alone.
        receiver.serve_with(newest.secret)
        await push.wait_status(later)
    [run_id] = later
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert attempts[0].status_code == 401
    assert attempts[-1].outcome == "completed"
    assert len(receiver.deliveries[-1][0][webhooks.SIGNATURE_HEADER].split()) == 1
    await assert_done_once(push, {**runs, **later})


async def signing_with(push: Push, endpoint_id: str, count: int) -> bool:
    """Whether the deliverer of the endpoint signs with ``count`` secrets now."""
    loop = push.server.runtime.push
    deliverer = None if loop is None else loop.deliverers.get(endpoint_id)
    return deliverer is not None and len(deliverer.target.secrets(now_ms())) == count
