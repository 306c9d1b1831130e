"""The push endpoint app (``aiki.endpoint``) against an in-process server.

The test plays the server's deliverer itself: it claims a run's activation through the worker
protocol (worker id ``endpoint:test``), signs a :class:`Delivery` the Standard Webhooks way, and
POSTs it to the endpoint app through ``httpx.ASGITransport``. The endpoint records through its own
client, as a function deployed apart from the server would. Both databases; the endpoint's client
reaches the server in-process or over HTTP on loopback (the ``transport`` fixture).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar, asgi

from aiki import Client, Endpoint, RetryPolicy, Run, client, endpoint, event, task, worker, workflow
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import (
    Activation,
    ClaimRequest,
    Delivery,
    HeartbeatRun,
    RegisterWorkerRequest,
    ReleaseRequest,
    VersionRef,
)
from aiki.worker_sdk.protocol.webhooks import new_secret, signed_headers
from tests.conftest import AikiHarness, _LoopbackUvicorn

from .helpers import API, LEDGER, get_run, new_key, task_address

WORKER_ID = "endpoint:test"
SECRET = new_secret()
_GATES: dict[str, asyncio.Event] = {}


def _gate(key: str) -> asyncio.Event:
    return _GATES.setdefault(key, asyncio.Event())


@task(name="ep-first")
async def ep_first(key: str) -> str:
    LEDGER.hit("ep-first", key)
    return f"first:{key}"


@task(name="ep-second")
async def ep_second(key: str) -> str:
    LEDGER.hit("ep-second", key)
    return f"second:{key}"


@task(name="ep-blocking")
async def ep_blocking(key: str) -> str:
    """Waits for its gate; a handler cancelled meanwhile says so in the ledger."""
    LEDGER.hit("ep-blocking", key)
    try:
        await _gate(key).wait()
    except asyncio.CancelledError:
        LEDGER.hit("ep-blocking-cancelled", key)
        raise
    return f"blocking:{key}"


@workflow("ep-tasks").v("1.0.0")
async def tasks_v1(run: Run, key: str) -> str:
    first = await ep_first.start(run, key)
    second = await ep_second.start(run, key)
    return f"{first}|{second}"


@workflow("ep-sleep").v("1.0.0")
async def sleep_v1(run: Run, key: str) -> str:
    await ep_first.start(run, key)
    await run.sleep(timedelta(hours=1))
    return "woke"


@workflow("ep-sequential-limit").v("1.0.0")
async def sequential_limit_v1(run: Run, key: str) -> str:
    first = await ep_first.start(run, key)
    blocking = await ep_blocking.start(run, key)
    return f"{first}|{blocking}"


@workflow("ep-parallel-limit").v("1.0.0")
async def parallel_limit_v1(run: Run, key: str) -> str:
    first, blocking = await asyncio.gather(ep_first.start(run, key), ep_blocking.start(run, key))
    return f"{first}|{blocking}"


@workflow("ep-event").v("1.0.0", events={"go": event()})
async def event_v1(run: Run, key: str) -> str:
    await ep_first.start(run, key)
    await run.events.go.wait()
    return "went"


@task(name="ep-flaky", retry=RetryPolicy.fixed(max_attempts=3, delay=timedelta(hours=1)))
async def ep_flaky(key: str) -> str:
    LEDGER.hit("ep-flaky", key)
    raise RuntimeError("not yet")


@workflow("ep-retry").v("1.0.0")
async def retry_v1(run: Run, key: str) -> str:
    await ep_first.start(run, key)
    return await ep_flaky.start(run, key)


@workflow("ep-parent").v("1.0.0")
async def parent_v1(run: Run, key: str) -> str:
    await ep_first.start(run, key)
    child = await tasks_v1.start_as_child(run, key)
    result = await child.wait_for_status("completed")
    return f"child said {result.output}"


@workflow("ep-not-served").v("1.0.0")
async def not_served_v1(run: Run, key: str) -> str:
    return key


SERVED = [tasks_v1, sleep_v1, sequential_limit_v1, parallel_limit_v1, event_v1, retry_v1, parent_v1]
ALL = [*SERVED, not_served_v1]


@dataclass
class Push:
    """The harness and the endpoint app, called in-process over HTTP (``httpx.ASGITransport``)."""

    aiki: AikiHarness
    app: Endpoint

    async def request(self, method: str, content: bytes | None = None, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://fn") as http:
            return await http.request(method, "/aiki/push", content=content, **kw)

    async def claim(self, version: Any, key: str | None = None, count: int = 1) -> list[Activation]:
        """Start ``count`` runs of ``version`` (unless ``key`` is None) and claim them."""
        for _ in range(count if key is not None else 0):
            await version.start(self.aiki.client, key if count == 1 else new_key())
        ref = VersionRef(version.name, version.version)
        response = await connect(self.aiki.client).claim(
            ClaimRequest(worker_id=WORKER_ID, versions=[ref], max_runs=count, wait_ms=5000)
        )
        assert len(response.activations) == count
        return response.activations

    async def deliver(
        self,
        activation: Activation,
        *,
        time_limit_ms: int = 20_000,
        secret: str = SECRET,
        timestamp: int | None = None,
        msg_id: str | None = None,
        body: bytes | None = None,
        **fields: Any,
    ) -> httpx.Response:
        delivery = Delivery(
            type="activation",
            endpoint_id="ep-test",
            attempt=1,
            time_limit_ms=time_limit_ms,
            activation=activation,
            **fields,
        )
        raw = body if body is not None else msgspec.json.encode(delivery)
        msg_id = msg_id or f"{activation.run_id}.{activation.revision}.{new_key()}"
        headers = signed_headers([secret], msg_id, timestamp or int(time.time()), raw)
        return await self.request("POST", raw, headers=headers)

    async def release(self, activation: Activation) -> None:
        """Put the run back in the queue, as the server does after a ``handed_back`` answer."""
        released = await connect(self.aiki.client).release(
            ReleaseRequest(worker_id=WORKER_ID, runs=[HeartbeatRun(activation.run_id, activation.revision)])
        )
        assert released.released == [activation.run_id]


async def _endpoint_client(aiki: AikiHarness) -> Client:
    """A client of the endpoint's own, as a function deployed apart from the server has."""
    return client(url=aiki.loopback.url) if aiki.loopback is not None else client(handler=aiki.handler)


@pytest.fixture
async def push(aiki: AikiHarness) -> AsyncIterator[Push]:
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(worker_id=WORKER_ID, host="test", versions=worker(ALL).specs(), concurrency=100)
    )
    own = await _endpoint_client(aiki)
    yield Push(aiki, endpoint(SERVED, client=own, secret=SECRET))
    await own.close()


async def _tasks(aiki: AikiHarness, run_id: str) -> list[tuple[str, str, int]]:
    detail = (await aiki.http.get(f"{API}/runs/{run_id}/detail")).json()
    return sorted((t["name"], t["status"], t["attempts"]) for t in detail["tasks"])


def _answer(response: httpx.Response, activation: Activation, outcome: str) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": outcome, "run_id": activation.run_id, "revision": activation.revision}


# -- outcomes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [False, True], ids=["no-limits", "server-limits"])
async def test_a_workflow_with_tasks_completes(push: Push, limits: bool) -> None:
    """``server-limits``: the delivery says the server's request limits, so the last task's record
    may travel with the completion."""
    key = new_key()
    [activation] = await push.claim(tasks_v1, key)
    sizes = {"payload_max_bytes": 64 * 1024, "batch_max_bytes": 512 * 1024} if limits else {}
    _answer(await push.deliver(activation, **sizes), activation, "completed")
    run = await get_run(push.aiki.http, activation.run_id)
    assert (run["status"], run["output"]) == ("completed", f"first:{key}|second:{key}")
    assert await _tasks(push.aiki, activation.run_id) == [("ep-first", "completed", 1), ("ep-second", "completed", 1)]
    assert (LEDGER.count("ep-first", key), LEDGER.count("ep-second", key)) == (1, 1)


@pytest.mark.parametrize(
    ("version", "status"),
    [
        (sleep_v1, "sleeping"),
        (event_v1, "awaiting_event"),
        (retry_v1, "awaiting_retry"),
        (parent_v1, "awaiting_child"),
    ],
    ids=["sleep", "event", "task-retry", "child"],
)
async def test_a_wait_suspends_and_releases_the_run(push: Push, version: Any, status: str) -> None:
    """No wait is held, however short: a function's time is what it costs."""
    key = new_key()
    [activation] = await push.claim(version, key)
    _answer(await push.deliver(activation), activation, "suspended")
    run = await get_run(push.aiki.http, activation.run_id)
    assert run["status"] == status
    assert ("ep-first", "completed", 1) in await _tasks(push.aiki, activation.run_id)


async def test_a_parent_and_its_child_complete_through_deliveries(push: Push) -> None:
    key = new_key()
    [parent] = await push.claim(parent_v1, key)
    _answer(await push.deliver(parent), parent, "suspended")
    [child] = await push.claim(tasks_v1)
    _answer(await push.deliver(child), child, "completed")
    [again] = await push.claim(parent_v1)  # the child's end wakes the parent
    assert again.run_id == parent.run_id
    _answer(await push.deliver(again), again, "completed")
    run = await get_run(push.aiki.http, parent.run_id)
    assert (run["status"], run["output"]) == ("completed", f"child said first:{key}|second:{key}")
    assert LEDGER.count("ep-first", key) == 2  # once in the parent, once in the child


async def test_concurrent_deliveries_are_executed_independently(push: Push) -> None:
    activations = await push.claim(tasks_v1, new_key(), count=20)
    responses = await asyncio.gather(*(push.deliver(a) for a in activations))
    for activation, response in zip(activations, responses, strict=True):
        _answer(response, activation, "completed")
        assert (await get_run(push.aiki.http, activation.run_id))["status"] == "completed"


async def test_a_run_cancelled_meanwhile_is_superseded(push: Push) -> None:
    key = new_key()
    [activation] = await push.claim(tasks_v1, key)
    cancel = await push.aiki.http.post(f"{API}/runs/{activation.run_id}/cancel", json={})
    assert cancel.status_code == 200, cancel.text
    _answer(await push.deliver(activation), activation, "superseded")
    assert (await get_run(push.aiki.http, activation.run_id))["status"] == "cancelled"
    assert await _tasks(push.aiki, activation.run_id) == []


# -- the time limit --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [sequential_limit_v1, parallel_limit_v1], ids=["sequential", "parallel"])
@pytest.mark.parametrize("writer", ["own", "registered"])
async def test_at_the_time_limit_the_run_is_handed_back_with_what_finished(
    push: Push, version: Any, writer: str
) -> None:
    """The blocking task is cancelled unrecorded; the first task is recorded once; the next delivery
    replays it and completes. ``registered``: the endpoint's client is one a worker registered with,
    so the first task's record may be deferred (it must be written all the same)."""
    if writer == "registered":
        push.app = endpoint(SERVED, client=push.aiki.client, secret=SECRET)
    key = new_key()
    [activation] = await push.claim(version, key)
    started = time.monotonic()
    _answer(await push.deliver(activation, time_limit_ms=800), activation, "handed_back")
    assert time.monotonic() - started < 0.8  # answered within the limit
    assert LEDGER.count("ep-blocking-cancelled", key) == 1
    assert await _tasks(push.aiki, activation.run_id) == [("ep-first", "completed", 1)]
    assert (await get_run(push.aiki.http, activation.run_id))["status"] == "running"  # the server requeues it

    await push.release(activation)
    _gate(key).set()
    [again] = await push.claim(version)
    assert again.run_id == activation.run_id
    assert again.revision > activation.revision
    assert [t.address for t in again.tasks] == [task_address("ep-first", key)]
    _answer(await push.deliver(again), again, "completed")
    run = await get_run(push.aiki.http, activation.run_id)
    assert (run["status"], run["output"]) == ("completed", f"first:{key}|blocking:{key}")
    assert LEDGER.count("ep-first", key) == 1
    assert await _tasks(push.aiki, activation.run_id) == [("ep-blocking", "completed", 1), ("ep-first", "completed", 1)]


async def test_the_endpoint_s_own_time_limit_rules_when_shorter(push: Push) -> None:
    push.app = endpoint(SERVED, client=push.app.client, secret=SECRET, time_limit=timedelta(milliseconds=600))
    key = new_key()
    [activation] = await push.claim(sequential_limit_v1, key)
    started = time.monotonic()
    _answer(await push.deliver(activation, time_limit_ms=60_000), activation, "handed_back")
    assert time.monotonic() - started < 0.6
    assert await _tasks(push.aiki, activation.run_id) == [("ep-first", "completed", 1)]


# -- refusals --------------------------------------------------------------------------------------


async def _untouched(push: Push, activation: Activation) -> None:
    run = await get_run(push.aiki.http, activation.run_id)
    assert run["status"] == "running"
    assert await _tasks(push.aiki, activation.run_id) == []


async def test_a_bad_signature_is_refused_and_nothing_runs(push: Push) -> None:
    key = new_key()
    [activation] = await push.claim(tasks_v1, key)
    response = await push.deliver(activation, secret=new_secret())
    assert (response.status_code, response.json()) == (401, {"error": "no signature matches"})
    unsigned = await push.request("POST", b"{}")
    assert unsigned.status_code == 401
    assert "missing header" in unsigned.json()["error"]
    assert LEDGER.count("ep-first", key) == 0
    await _untouched(push, activation)


async def test_a_stale_timestamp_is_refused(push: Push) -> None:
    [activation] = await push.claim(tasks_v1, new_key())
    response = await push.deliver(activation, timestamp=int(time.time()) - 301)
    assert response.status_code == 401
    assert "webhook-timestamp" in response.json()["error"]
    await _untouched(push, activation)


async def test_a_replayed_webhook_id_is_refused(push: Push) -> None:
    key = new_key()
    [activation] = await push.claim(sleep_v1, key)
    msg_id = f"{activation.run_id}.{activation.revision}"
    _answer(await push.deliver(activation, msg_id=msg_id), activation, "suspended")
    replay = await push.deliver(activation, msg_id=msg_id)
    assert (replay.status_code, replay.json()) == (401, {"error": "replayed: this webhook-id was already accepted"})
    assert LEDGER.count("ep-first", key) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "malformed"),
        (b'{"type": "activation"}', "missing required field"),
        (b'{"type": "webhook", "endpoint_id": "e", "attempt": 1, "time_limit_ms": 1, "activation": {}}', "type"),
        (b"[1, 2]", "expected `object`"),
    ],
)
async def test_a_body_that_is_not_a_delivery_is_refused(push: Push, body: bytes, reason: str) -> None:
    [activation] = await push.claim(tasks_v1, new_key())
    response = await push.deliver(activation, body=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("the body is not a delivery")
    assert reason.lower() in response.json()["error"].lower()
    await _untouched(push, activation)


async def test_an_unknown_version_is_404(push: Push) -> None:
    [activation] = await push.claim(not_served_v1, new_key())
    response = await push.deliver(activation)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "ep-not-served@1.0.0 is not served by this endpoint"},
    )
    await _untouched(push, activation)


async def test_a_run_the_server_does_not_know_is_404(push: Push) -> None:
    key = new_key()
    [activation] = await push.claim(tasks_v1, key)
    ghost = msgspec.structs.replace(activation, run_id=activation.run_id[:-4] + "zzzz")
    response = await push.deliver(ghost)
    assert response.status_code == 404, response.text
    assert ghost.run_id in response.json()["error"]


async def test_other_methods_and_oversized_bodies_are_refused(push: Push) -> None:
    for method in ("GET", "PUT", "DELETE", "HEAD"):
        response = await push.request(method)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
    push.app.max_body_bytes = 1024
    response = await push.request("POST", b"x" * 1025)
    assert response.status_code == 413


# -- hosts -----------------------------------------------------------------------------------------


async def test_served_by_uvicorn_with_its_lifespan(push: Push) -> None:
    """A bare uvicorn serves it, lifespan on (its messages are checked in tests/unit/sdk/test_endpoint_asgi.py)."""
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(push.app, lifespan="on", log_config=None, access_log=False, log_level="warning")
    served = _LoopbackUvicorn(config)
    serving = asyncio.create_task(served.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            await served.ready.wait()
        key = new_key()
        [activation] = await push.claim(tasks_v1, key)
        raw = msgspec.json.encode(
            Delivery(type="activation", endpoint_id="ep", attempt=1, time_limit_ms=20_000, activation=activation)
        )
        headers = signed_headers([SECRET], f"{activation.run_id}.{activation.revision}", int(time.time()), raw)
        async with httpx.AsyncClient(base_url=url) as http:
            _answer(await http.post("/api/aiki", content=raw, headers=headers), activation, "completed")
    finally:
        served.should_exit = True
        await serving
    assert (await get_run(push.aiki.http, activation.run_id))["status"] == "completed"


async def test_mounted_under_a_prefix_in_litestar(push: Push) -> None:
    app = push.app

    @asgi("/functions/aiki", is_mount=True, copy_scope=True)
    async def mounted(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    host = Litestar(route_handlers=[mounted])
    key = new_key()
    [activation] = await push.claim(tasks_v1, key)
    raw = msgspec.json.encode(
        Delivery(type="activation", endpoint_id="ep", attempt=1, time_limit_ms=20_000, activation=activation)
    )
    headers = signed_headers([SECRET], f"{activation.run_id}.{activation.revision}", int(time.time()), raw)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://fn") as http:
        response = await http.post("/functions/aiki", content=raw, headers=headers)
    _answer(response, activation, "completed")
