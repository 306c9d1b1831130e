"""``client(url=...)`` (the aiohttp backend) against real HTTP servers on loopback.

The servers run in the test's own event loop: an ``aiohttp.web`` app for ordinary answers, and a raw
``asyncio`` server where the test needs to misbehave below HTTP (drop a kept-alive connection, cut a
body short). Nothing leaves 127.0.0.1 and no process is started.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from aiohttp import web

from aiki.worker_sdk import (
    Client,
    RateLimitedError,
    RunNotFoundError,
    ServerUnavailableError,
    StaleRevisionError,
    UnexpectedResponseError,
    ValidationError,
    client,
)
from aiki.worker_sdk._http_backends import AiohttpBackend
from aiki.worker_sdk.protocol import RunView, StartRunRequest, StartRunResponse

GUARD_S = 5.0  # no single await in these tests may take longer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def view(status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {
        "id": "r1",
        "workflow": "subscription-trial",
        "version": "1.0.0",
        "status": status,
        "revision": 1,
        "attempt": 1,
        "created_at": 0,
        "updated_at": 0,
        "input": None,
        "output": None,
        **extra,
    }


def problem(status: int, code: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": code, "status": status, "code": code, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


def answer(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


async def guarded(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, GUARD_S)


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: tuple[str, int]


@dataclass
class LoopbackServer:
    """An ``aiohttp.web`` server on 127.0.0.1 that records requests and answers from ``routes``.

    ``routes`` maps ``(method, path)`` (path with the ``/api/v1`` prefix) to a handler; anything
    else gets a 404 ``not_found`` problem. ``release`` is set at teardown so that handlers waiting
    on it end.
    """

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await guarded(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", port)
        await guarded(site.start())
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await guarded(runner.cleanup())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        self.requests.append(
            Seen(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.read(),
                peer=tuple(peer) if peer else ("", 0),
            )
        )
        route = self.routes.get((request.method, request.path))
        if route is None:
            return problem(404, "not_found")
        return await route(request)


@dataclass
class RawServer:
    """A hand-written HTTP/1.1 server on 127.0.0.1, for misbehaviour below HTTP.

    ``respond(connection_index, request_index_on_that_connection, method, path)`` returns the raw
    bytes to write, or None to close the connection without answering. With ``close_after``, the
    connection is closed after each answer.
    """

    respond: Callable[[int, int, str, str], bytes | None]
    close_after: bool = False
    connections: int = 0
    requests: list[tuple[int, int, str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await guarded(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await guarded(self._server.wait_closed())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        index = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.requests.append((conn, index, method, target))
                out = self.respond(conn, index, method, target)
                index += 1
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()


def raw_json(payload: Any, *, extra_headers: str = "", declared_length: int | None = None) -> bytes:
    body = json.dumps(payload).encode()
    length = len(body) if declared_length is None else declared_length
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{extra_headers}\r\n"
    ).encode()
    return head + body


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    s = LoopbackServer()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Client]]:
    """Builds ``client(url=...)`` clients and closes them all at teardown."""
    made: list[Client] = []

    def make(url: str, **kwargs: Any) -> Client:
        c = client(url=url, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        await guarded(c.close())


@pytest.fixture
def free_port() -> int:
    """A loopback port with nothing listening on it (bound once to pick it, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- what goes on the wire, and what comes back -----------------------------------------------


async def test_url_client_goes_through_aiohttp(make_client: Callable[..., Client]) -> None:
    # White-box: the point of this file is the aiohttp path, so make sure it is the one in use.
    c = make_client("http://127.0.0.1:1")
    assert isinstance(c.transport.backend, AiohttpBackend)


async def test_post_sends_bearer_json_body_under_api_prefix(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    async def start(request: web.Request) -> web.StreamResponse:
        return answer({"run": view(reference_id="order-42"), "created": True}, status=201)

    server.routes[("POST", "/api/v1/runs")] = start
    c = make_client(server.url, api_key="k")

    response = await guarded(
        c.start_run(StartRunRequest(workflow="subscription-trial", version="1.0.0", input={"user_id": "u"}, pool="gpu"))
    )

    assert isinstance(response, StartRunResponse)
    assert isinstance(response.run, RunView)
    assert response.created is True
    assert response.run.id == "r1"
    assert response.run.reference_id == "order-42"
    [seen] = server.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/api/v1/runs", {})
    assert seen.headers["authorization"] == "Bearer k"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {
        "workflow": "subscription-trial",
        "version": "1.0.0",
        "input": {"user_id": "u"},
        "pool": "gpu",
    }


async def test_get_sends_query_params_and_no_body(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view("completed", output={"a": 1}))

    server.routes[("GET", "/api/v1/runs/r1")] = get
    c = make_client(server.url, api_key="k")

    run = await guarded(c.get_run("r1", wait_for=["completed", "failed"], timeout_ms=1000))

    assert isinstance(run, RunView)
    assert run.status == "completed"
    assert msgspec.json.decode(run.output) == {"a": 1}
    [seen] = server.requests
    assert (seen.method, seen.path) == ("GET", "/api/v1/runs/r1")
    assert seen.query == {"wait_for": "completed,failed", "timeout_ms": "1000"}
    assert seen.headers["authorization"] == "Bearer k"
    assert seen.body == b""
    assert "content-type" not in seen.headers


async def test_no_api_key_sends_no_authorization(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = get
    c = make_client(server.url + "/")  # a trailing slash does not double the one before /api/v1

    await guarded(c.get_run("r1"))

    [seen] = server.requests
    assert seen.path == "/api/v1/runs/r1"
    assert "authorization" not in seen.headers


# -- error answers --------------------------------------------------------------------------------


async def test_stale_revision_problem(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def stale(request: web.Request) -> web.StreamResponse:
        return problem(409, "stale_revision", detail="revision 3 is current", run_id="r1")

    server.routes[("POST", "/api/v1/runs")] = stale
    c = make_client(server.url)

    with pytest.raises(StaleRevisionError) as info:
        await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))

    assert info.value.status == 409
    assert info.value.code == "stale_revision"
    assert info.value.run_id == "r1"
    assert "revision 3 is current" in str(info.value)


async def test_run_not_found_problem_carries_run_id(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return problem(404, "run_not_found", detail="no run r9", run_id="r9")

    server.routes[("GET", "/api/v1/runs/r9")] = missing
    c = make_client(server.url)

    with pytest.raises(RunNotFoundError) as info:
        await guarded(c.get_run("r9"))

    assert info.value.status == 404
    assert info.value.run_id == "r9"
    assert "no run r9" in str(info.value)


async def test_validation_problem_carries_field(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def invalid(request: web.Request) -> web.StreamResponse:
        return problem(422, "validation_error", detail="expected str", field="input.user_id")

    server.routes[("POST", "/api/v1/runs")] = invalid
    c = make_client(server.url)

    with pytest.raises(ValidationError) as info:
        await guarded(c.start_run(StartRunRequest(workflow="w", version="1", input={"user_id": 42})))

    assert info.value.status == 422
    assert info.value.field == "input.user_id"
    assert "expected str" in str(info.value)


async def test_rate_limited_reads_retry_after(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        response = problem(429, "rate_limited", detail="slow down")
        response.headers["Retry-After"] = "3"
        return response

    server.routes[("GET", "/api/v1/runs/r1")] = limited
    c = make_client(server.url)

    with pytest.raises(RateLimitedError) as info:
        await guarded(c.get_run("r1"))

    assert info.value.retry_after == 3.0
    assert info.value.status == 429
    assert "slow down" in str(info.value)


async def test_non_json_502_is_server_unavailable_with_body(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    async def gateway(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="upstream exploded", content_type="text/plain")

    server.routes[("GET", "/api/v1/runs/r1")] = gateway
    c = make_client(server.url)

    with pytest.raises(ServerUnavailableError) as info:
        await guarded(c.get_run("r1"))

    assert type(info.value) is ServerUnavailableError
    assert info.value.status == 502
    assert "upstream exploded" in str(info.value)


async def test_empty_503_falls_back_to_the_reason_phrase(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    server.routes[("GET", "/api/v1/runs/r1")] = empty
    c = make_client(server.url)

    with pytest.raises(ServerUnavailableError) as info:
        await guarded(c.get_run("r1"))

    assert info.value.status == 503
    assert "Service Unavailable" in str(info.value)


@pytest.mark.parametrize("body", [b'{"unexpected": true}', b"ok", b""])
async def test_undecodable_200_is_unexpected_response(
    server: LoopbackServer, make_client: Callable[..., Client], body: bytes
) -> None:
    async def odd(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=body, content_type="application/json")

    server.routes[("GET", "/api/v1/runs/r1")] = odd
    c = make_client(server.url)

    with pytest.raises(UnexpectedResponseError) as info:
        await guarded(c.get_run("r1"))

    assert info.value.status == 200
    assert "/runs/r1" in str(info.value)


# -- no answer ------------------------------------------------------------------------------------


async def test_connection_refused_is_server_unavailable(free_port: int, make_client: Callable[..., Client]) -> None:
    c = make_client(f"http://127.0.0.1:{free_port}")

    with pytest.raises(ServerUnavailableError) as info:
        await guarded(c.get_run("r1"))

    assert type(info.value) is ServerUnavailableError
    assert info.value.status is None


async def test_silent_server_times_out_as_server_unavailable(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await server.release.wait()  # set at teardown only
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = hang
    c = make_client(server.url, timeout=timedelta(seconds=0.3))

    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        await guarded(c.get_run("r1"))
    elapsed = time.monotonic() - started

    assert arrived.is_set()  # the request reached the server: this is a timeout, not a refusal
    assert type(info.value) is ServerUnavailableError
    assert 0.25 <= elapsed < 2.0, elapsed


async def test_long_poll_extends_the_default_timeout(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    arrived = asyncio.Event()
    go = asyncio.Event()

    async def poll(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await go.wait()
        return answer(view("completed"))

    server.routes[("GET", "/api/v1/runs/r1")] = poll
    c = make_client(server.url, timeout=timedelta(seconds=0.3))

    task = asyncio.create_task(c.get_run("r1", wait_for=["completed"], timeout_ms=1000))
    await guarded(arrived.wait())
    # Three times the client's default timeout: only the long-poll's own timeout (1 s + margin)
    # keeps the request alive this long.
    done, _ = await asyncio.wait({task}, timeout=0.9)
    assert not done, task.exception() if task.done() else None
    go.set()
    run = await guarded(task)
    assert run.status == "completed"


# -- connections ----------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = get
    c = make_client(server.url)

    await guarded(c.get_run("r1"))
    await guarded(c.get_run("r1"))

    first, second = server.requests
    assert first.peer == second.peer


async def test_request_after_server_closed_the_connection(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    calls = 0

    async def get(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        response = answer(view())
        if calls == 1:
            response.force_close()  # answers with Connection: close and drops the connection
        return response

    async def start(request: web.Request) -> web.StreamResponse:
        return answer({"run": view(), "created": True})

    server.routes[("GET", "/api/v1/runs/r1")] = get
    server.routes[("POST", "/api/v1/runs")] = start
    c = make_client(server.url)

    await guarded(c.get_run("r1"))
    # A POST is never retried by aiohttp: it must go on a fresh connection the first time.
    created = await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))
    await guarded(c.get_run("r1"))

    assert created.created is True
    first, second, third = server.requests
    assert first.peer != second.peer
    assert second.peer == third.peer


async def test_request_after_server_restart_on_the_same_port(
    server: LoopbackServer, make_client: Callable[..., Client]
) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    async def start(request: web.Request) -> web.StreamResponse:
        return answer({"run": view(), "created": True})

    server.routes[("GET", "/api/v1/runs/r1")] = get
    server.routes[("POST", "/api/v1/runs")] = start
    c = make_client(server.url)
    await guarded(c.get_run("r1"))  # leaves a kept-alive connection in the pool

    port = server.port
    await server.stop()
    server.release = asyncio.Event()
    await server.start(port)
    assert server.port == port

    created = await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))
    await guarded(c.get_run("r1"))

    assert created.created is True
    first, second, third = server.requests
    assert first.peer != second.peer
    assert second.peer == third.peer


async def test_connection_dropped_as_a_request_arrives(make_client: Callable[..., Client]) -> None:
    """The server drops a kept-alive connection just as the next request arrives on it.

    aiohttp resends an idempotent GET on a new connection; a POST may have been acted on, so it
    is not resent and the caller gets ``ServerUnavailableError`` (never a raw aiohttp error).
    """

    def respond(conn: int, index: int, method: str, path: str) -> bytes | None:
        if index >= 1:
            return None
        return raw_json({"run": view(), "created": True} if method == "POST" else view())

    raw = RawServer(respond)
    await raw.start()
    try:
        c = make_client(raw.url)
        await guarded(c.get_run("r1"))
        run = await guarded(c.get_run("r1"))
        assert run.id == "r1"
        assert [(conn, index, method) for conn, index, method, _ in raw.requests] == [
            (0, 0, "GET"),
            (0, 1, "GET"),
            (1, 0, "GET"),
        ]

        with pytest.raises(ServerUnavailableError):
            await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))
        assert raw.requests[-1][1:3] == (1, "POST")
        created = await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))
        assert created.created is True
    finally:
        await raw.stop()


async def test_truncated_body_is_server_unavailable(make_client: Callable[..., Client]) -> None:
    def respond(conn: int, index: int, method: str, path: str) -> bytes | None:
        whole = raw_json(view())
        return raw_json(view(), declared_length=len(whole) + 100)  # promises more than it sends

    raw = RawServer(respond, close_after=True)
    await raw.start()
    try:
        c = make_client(raw.url)
        with pytest.raises(ServerUnavailableError):
            await guarded(c.get_run("r1"))
    finally:
        await raw.stop()


async def test_close_then_request_reopens(server: LoopbackServer, make_client: Callable[..., Client]) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = get
    c = make_client(server.url, api_key="k")
    await guarded(c.get_run("r1"))
    backend = c.transport.backend
    assert isinstance(backend, AiohttpBackend)
    session = backend._session  # white-box: the session close() must close
    assert session is not None

    await guarded(c.close())
    assert session.closed

    # The backend opens a new session on next use (``_open``): the client stays usable.
    run = await guarded(c.get_run("r1"))
    assert run.id == "r1"
    assert backend._session is not session
    first, second = server.requests
    assert first.peer != second.peer  # a new connection, from the new session
    assert second.headers["authorization"] == "Bearer k"  # with the client's headers still
    await guarded(c.close())
    await guarded(c.close())  # closing twice is harmless


async def test_async_with_closes_the_session(server: LoopbackServer) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = get
    async with client(url=server.url) as c:
        await guarded(c.get_run("r1"))
        backend = c.transport.backend
        assert isinstance(backend, AiohttpBackend)
        session = backend._session
    assert session is not None
    assert session.closed


# -- parity with the httpx client that client(url=...) used before ------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "httpx",
        "aiohttp",
    ],
)
async def test_redirect_is_not_followed(server: LoopbackServer, backend: str) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return answer({"run": view(), "created": True})

    server.routes[("POST", "/api/v1/runs")] = moved
    server.routes[("GET", "/elsewhere")] = elsewhere
    server.routes[("POST", "/elsewhere")] = elsewhere
    # client(url=..., transport=...) still goes through httpx: the behaviour client(url=...) had.
    transport = httpx.AsyncHTTPTransport() if backend == "httpx" else None
    c = client(url=server.url, transport=transport)
    try:
        with pytest.raises(UnexpectedResponseError) as info:
            await guarded(c.start_run(StartRunRequest(workflow="w", version="1")))
    finally:
        await guarded(c.close())

    assert info.value.status == 302
    assert [(seen.method, seen.path) for seen in server.requests] == [("POST", "/api/v1/runs")]


async def test_proxy_from_the_environment_is_used(
    server: LoopbackServer, make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return answer(view())

    server.routes[("GET", "/api/v1/runs/r1")] = get
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("http_proxy", server.url)
    # .test is reserved (RFC 6761): only the proxy can reach it.
    c = make_client("http://aiki.test", timeout=timedelta(seconds=2))

    run = await guarded(c.get_run("r1"))

    assert run.id == "r1"
    [seen] = server.requests
    assert seen.headers["host"] == "aiki.test"
