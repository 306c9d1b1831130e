"""The server delivers ready runs to push endpoints (``aiki.platform.runtime.push_loop``): signed
POSTs, retries with backoff, the circuit breaker, the concurrency limit across replicas, lease
keeping, SSRF re-check at delivery time, and a clean stop. Both databases.

The endpoint here is a stand-in ASGI app served by uvicorn on loopback: it verifies the Standard
Webhooks signature like the SDK's ``endpoint(...)`` does, then completes the delivered run through
the worker protocol (``run_commands``) fenced by the delivered revision, and answers a
``DeliveryAnswer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
import uvicorn

from aiki import Run, client, workflow
from aiki.api.server import AikiServer
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID, endpoints
from aiki.platform.domain.errors import RunNotFound
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.settings import Settings
from aiki.platform.runtime.push_loop import WAKE_KEY
from aiki.platform.secret_box import SecretBox
from aiki.platform.services import deliveries
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import webhooks
from tests.conftest import _LoopbackUvicorn

from .helpers import API, new_key

NS = DEFAULT_NAMESPACE_ID
WAIT_S = 30.0

push_wf = workflow(name="push-delivery-wf")


@push_wf.v("1")
async def push_v1(run: Run, key: str) -> str:  # executed by the stand-in endpoint, never here
    return key


@pytest.fixture
def transport() -> str:
    """The SDK client here only starts runs and sends commands: one transport is enough."""
    return "port"


# -- the stand-in endpoint ----------------------------------------------------------------------

Behaviour = Callable[["Receiver", p.Delivery], Awaitable[tuple[int, bytes]]]


class Receiver:
    """An endpoint stand-in: verifies each delivery's signature, then ``behave`` answers it."""

    def __init__(self, secret: str, aiki_client: Any, behave: Behaviour | None = None, port: int = 0) -> None:
        self.secret = secret
        self.client = aiki_client
        self.behave = behave or complete
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
            status, answer = await self.behave(self, delivery)
        finally:
            self.active -= 1
        await _respond(send, status, answer)

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


async def complete(r: Receiver, d: p.Delivery) -> tuple[int, bytes]:
    """Record one task and complete the run, fenced by the delivered revision."""
    a = d.activation
    record = p.RecordTask(
        run_id=a.run_id, revision=a.revision, address="step:1", seq=0, name="step", status="completed", attempts=1
    )
    done = p.Complete(run_id=a.run_id, revision=a.revision, output="done")
    results = await connect(r.client).run_commands([record, done])
    if any(res.problem is not None for res in results):
        return 200, answer(d, "superseded")
    return 200, answer(d, "completed")


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

    async def add_endpoint(self, url: str, secret: str, *, concurrency: int = 10, timeout_ms: int = 5_000) -> str:
        """An endpoint row as the registry writes it (until the endpoints service is merged)."""
        endpoint_id = new_id()
        assert self.svc.secret_box is not None
        now = now_ms()
        async with self.svc.db.transaction() as conn:
            await conn.execute(
                sa.insert(endpoints).values(
                    id=endpoint_id,
                    namespace_id=NS,
                    url=url,
                    versions=msgspec.json.encode([["push-delivery-wf", "1"]]).decode(),
                    pools="[]",
                    concurrency=concurrency,
                    timeout_ms=timeout_ms,
                    enabled=True,
                    secret=self.svc.secret_box.seal(secret, context=endpoint_id),
                    secret_hint=secret[:10],
                    breaker="closed",
                    breaker_opens=0,
                    consecutive_failures=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        self.svc.hub.notify(WAKE_KEY)
        return endpoint_id

    async def set_enabled(self, endpoint_id: str, enabled: bool) -> None:
        async with self.svc.db.transaction() as conn:
            await conn.execute(
                sa.update(endpoints).where(endpoints.c.id == endpoint_id).values(enabled=enabled, updated_at=now_ms())
            )
        self.svc.hub.notify(WAKE_KEY)

    async def endpoint_row(self, endpoint_id: str) -> Any:
        async with self.svc.db.transaction() as conn:
            return (await conn.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id))).mappings().one()

    async def start_runs(self, count: int) -> list[str]:
        handles = await asyncio.gather(*(push_v1.start(self.client, new_key()) for _ in range(count)))
        return [h.id for h in handles]

    async def wait_status(self, run_ids: list[str], status: str = "completed") -> None:
        handles = [await push_v1.get_handle(self.client, run_id) for run_id in run_ids]
        await asyncio.gather(*(h.wait_for_status(status, timeout=WAIT_S) for h in handles))


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
async def receiving(secret: str, push: Push, behave: Behaviour | None = None, port: int = 0) -> AsyncIterator[Receiver]:
    receiver = await Receiver(secret, push.client, behave, port).start()
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


# -- tests --------------------------------------------------------------------------------------


async def test_each_run_is_delivered_signed_and_completed(make_push: Any) -> None:
    push = await make_push()
    secret = webhooks.new_secret()
    async with receiving(secret, push) as receiver:
        endpoint_id = await push.add_endpoint(receiver.url, secret)
        run_ids = await push.start_runs(20)
        await push.wait_status(run_ids)
    assert receiver.refused == 0
    assert sorted(receiver.per_run) == sorted(run_ids)
    assert set(receiver.per_run.values()) == {1}
    for headers, delivery in receiver.deliveries:
        a = delivery.activation
        assert headers[webhooks.ID_HEADER] == f"{a.run_id}.{a.revision}"
        assert abs(int(headers[webhooks.TIMESTAMP_HEADER]) - time.time()) < 60
        assert (delivery.endpoint_id, delivery.attempt) == (endpoint_id, 1)
        assert 0 < delivery.time_limit_ms < 5_000
    for run_id in run_ids:
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
    row = await push.endpoint_row(endpoint_id)
    assert (row["breaker"], row["last_status_code"], row["last_error"]) == ("closed", 200, None)
    assert row["last_delivery_at"] is not None
    with pytest.raises(RunNotFound):
        await deliveries.run_deliveries(push.svc, NS, new_id())


async def test_a_failing_delivery_is_retried_with_backoff_and_recorded_once(make_push: Any) -> None:
    push = await make_push()
    secret = webhooks.new_secret()

    async def fail_twice(r: Receiver, d: p.Delivery) -> tuple[int, bytes]:
        if r.per_run[d.activation.run_id] <= 2:
            return 500, b'{"title": "boom"}'
        return await complete(r, d)

    async with receiving(secret, push, fail_twice) as receiver:
        await push.add_endpoint(receiver.url, secret)
        [run_id] = await push.start_runs(1)
        await push.wait_status([run_id])
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
    # Backoff: base 100 ms then 200 ms nominal, jittered into their upper half.
    gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 50, gaps
    assert gaps[1] >= 100, gaps
    asgi = httpx.ASGITransport(app=push.server.handler)
    async with httpx.AsyncClient(transport=asgi, base_url="http://aiki") as http:
        detail = (await http.get(f"{API}/runs/{run_id}/detail")).json()
    assert [(t["address"], t["status"]) for t in detail["tasks"]] == [("step:1", "completed")]


async def test_the_breaker_opens_while_the_endpoint_is_down_and_closes_after_a_probe(make_push: Any) -> None:
    push = await make_push(endpoint_breaker_threshold=3, endpoint_max_attempts=3)
    secret = webhooks.new_secret()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    # Nothing listens on the port: connections are refused.
    endpoint_id = await push.add_endpoint(f"http://127.0.0.1:{port}/push", secret)
    run_ids = await push.start_runs(4)

    async def opened() -> bool:
        return (await push.endpoint_row(endpoint_id))["breaker"] == "open"

    await until(opened, "the breaker to open")
    async with receiving(secret, push, port=port):
        await push.wait_status(run_ids)
    row = await push.endpoint_row(endpoint_id)
    assert (row["breaker"], row["consecutive_failures"], row["breaker_opens"]) == ("closed", 0, 0)
    outcomes = Counter([x.outcome for run_id in run_ids for x in await deliveries.run_deliveries(push.svc, NS, run_id)])
    assert outcomes["completed"] == 4
    assert outcomes["connection_error"] >= 3


async def test_the_concurrency_limit_holds(make_push: Any) -> None:
    push = await make_push()
    secret = webhooks.new_secret()

    async def slow(r: Receiver, d: p.Delivery) -> tuple[int, bytes]:
        await asyncio.sleep(0.03)  # the stand-in endpoint's work, so deliveries overlap
        return await complete(r, d)

    async with receiving(secret, push, slow) as receiver:
        await push.add_endpoint(receiver.url, secret, concurrency=3)
        run_ids = await push.start_runs(30)
        await push.wait_status(run_ids)
    assert receiver.max_active == 3


async def test_stop_gives_back_the_runs_it_holds(make_push: Any) -> None:
    push = await make_push()
    secret = webhooks.new_secret()
    release = asyncio.Event()

    async def hang(r: Receiver, d: p.Delivery) -> tuple[int, bytes]:
        await release.wait()
        return await complete(r, d)

    async with receiving(secret, push, hang) as receiver:
        await push.add_endpoint(receiver.url, secret)
        run_ids = await push.start_runs(3)

        async def all_arrived() -> bool:
            return len(receiver.per_run) == 3

        await until(all_arrived, "three deliveries in flight")
        await push.server.runtime.stop()
        for run_id in run_ids:
            view = await push.client.get_run(run_id)
            assert view.status == "queued", view
        release.set()  # the endpoint's late writes are fenced: the runs stay queued
    for run_id in run_ids:
        assert (await push.client.get_run(run_id)).status == "queued"


async def test_a_disabled_endpoint_stops_and_gives_back_its_runs(make_push: Any) -> None:
    push = await make_push()
    secret = webhooks.new_secret()
    release = asyncio.Event()

    async def hang(r: Receiver, d: p.Delivery) -> tuple[int, bytes]:
        await release.wait()
        return await complete(r, d)

    async with receiving(secret, push, hang) as receiver:
        endpoint_id = await push.add_endpoint(receiver.url, secret)
        [run_id] = await push.start_runs(1)
        await asyncio.wait_for(receiver.arrived.wait(), WAIT_S)
        await push.set_enabled(endpoint_id, False)
        await push.wait_status([run_id], "queued")
        release.set()
    assert (await push.client.get_run(run_id)).status == "queued"


async def test_a_private_address_is_refused_at_delivery_time(make_push: Any) -> None:
    push = await make_push(endpoints_allow_private=False, endpoint_max_attempts=2)
    secret = webhooks.new_secret()
    async with receiving(secret, push) as receiver:
        endpoint_id = await push.add_endpoint(receiver.url, secret)
        [run_id] = await push.start_runs(1)

        async def refused_twice() -> bool:
            return len(await deliveries.run_deliveries(push.svc, NS, run_id)) >= 2

        await until(refused_twice, "two refused deliveries")
    attempts = await deliveries.run_deliveries(push.svc, NS, run_id)
    assert {x.outcome for x in attempts} == {"refused"}
    assert "loopback" in (attempts[0].error or "")
    assert receiver.deliveries == []
    row = await push.endpoint_row(endpoint_id)
    assert "loopback" in (row["last_error"] or "")


async def test_two_replicas_deliver_each_activation_once(make_push: Any, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several server processes share PostgreSQL only")
    first = await make_push()
    second = await make_push()
    secret = webhooks.new_secret()
    async with receiving(secret, first) as receiver:
        endpoint_id = await first.add_endpoint(receiver.url, secret, concurrency=20)
        second.svc.hub.notify(WAKE_KEY)
        started = await asyncio.gather(first.start_runs(200), second.start_runs(200))
        run_ids = started[0] + started[1]
        await first.wait_status(run_ids)
        replicas = [push.server.runtime.push for push in (first, second)]
        posts = [r.deliverers[endpoint_id].posts for r in replicas if r is not None]
    ids = [headers[webhooks.ID_HEADER] for headers, _ in receiver.deliveries]
    assert len(ids) == len(set(ids))
    assert set(receiver.per_run) == set(run_ids)
    assert receiver.max_active <= 20
    rows = [x for run_id in run_ids for x in await deliveries.run_deliveries(first.svc, NS, run_id)]
    assert len(rows) == len(ids)
    assert len({(x.run_id, x.revision) for x in rows}) == len(rows)
    assert sum(posts) == len(ids)
    assert min(posts) > 0, posts  # both replicas delivered
