"""How the SDK reaches a server: one :class:`Transport`, over HTTP or through an embedded server's port.

Both implementations offer the same calls with the same wire Structs and raise the same SDK
exceptions. The executor's writes take one call, :meth:`Transport.run_commands`: a list of typed
commands (``protocol.commands``) answered by one result each, in order (``POST /workers/commands``
over HTTP, the port's ``run_commands`` in process). The write pipeline (``_pipeline.py``) sits
above it; nothing above the transport asks which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import msgspec

from aiki.worker_sdk._http_backends import HttpAnswer, HttpBackend, send_retrying_unavailable
from aiki.worker_sdk.errors import AikiError, UnexpectedResponseError
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    ClaimResponse,
    Command,
    CommandBatch,
    CommandResult,
    CommandResults,
    HeartbeatRequest,
    HeartbeatResponse,
    Problem,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReleaseRequest,
    ReleaseResponse,
    RunView,
    SendEventRequest,
    SendEventResponse,
    StartRunRequest,
    StartRunResponse,
    WatchRequest,
    WatchResponse,
)
from aiki.worker_sdk.transport import LocalPort, error_from_problem

R = TypeVar("R")

API_PREFIX = "/api/v1"
COMMANDS_PATH = "/workers/commands"
# Long-polls are answered by the server at its own deadline; the HTTP timeout only guards against
# a server that never answers, so it is the poll time plus this margin.
POLL_MARGIN_S = 15.0
# A parking command (a held sleep's resume) is answered when the sleep ends (at most the server's
# 30 s hold limit).
PARKED_TIMEOUT_S = 30 + POLL_MARGIN_S


def error_from_response(answer: HttpAnswer) -> AikiError:
    """Map an error answer (problem+json, or anything else) to the SDK exception tree."""
    try:
        problem: Problem | None = msgspec.json.decode(answer.body, type=Problem)
    except (msgspec.DecodeError, msgspec.ValidationError):
        problem = None
    return error_from_problem(
        answer.status,
        problem,
        fallback=answer.body[:500].decode("utf-8", "replace") or answer.reason,
        retry_after=answer.retry_after,
    )


class Transport(Protocol):
    """The calls the SDK makes; :class:`HttpTransport` and :class:`LocalTransport` implement it."""

    max_in_flight: int | None
    """How many command batches may be on their way at once (None: commands are not batched)."""

    async def request(
        self,
        method: str,
        path: str,
        response_type: type[R],
        body: msgspec.Struct | bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> R: ...

    async def start_run(self, request: StartRunRequest) -> StartRunResponse: ...

    async def get_run(self, run_id: str, wait_for: Sequence[str], timeout_ms: int | None) -> RunView: ...

    async def send_event(self, run_id: str, name: str, request: SendEventRequest) -> SendEventResponse: ...

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse: ...

    async def claim(self, request: ClaimRequest) -> ClaimResponse: ...

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse: ...

    async def watch(self, request: WatchRequest) -> WatchResponse: ...

    async def release(self, request: ReleaseRequest) -> ReleaseResponse: ...

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]: ...

    async def aclose(self) -> None: ...


class HttpTransport:
    """Every call as an HTTP request (a network server through aiohttp, or an ASGI app through httpx)."""

    max_in_flight: int | None = 2

    def __init__(self, backend: HttpBackend) -> None:
        self.backend = backend

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def request(
        self,
        method: str,
        path: str,
        response_type: type[R],
        body: msgspec.Struct | bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> R:
        """Send one API request below ``/api/v1`` and decode the answer.

        A 503 answer (the server's database is unavailable or busy; nothing was done) is retried a
        few times with backoff before it is raised.

        Raises:
            AikiError: The subclass matching the server's problem ``code``;
                ``ServerUnavailableError`` on connection errors and 5xx.
        """
        content = body if body is None or isinstance(body, bytes) else msgspec.json.encode(body)
        answer = await send_retrying_unavailable(self.backend, method, API_PREFIX + path, content, params, timeout)
        if answer.status >= 400:
            raise error_from_response(answer)
        try:
            return msgspec.json.decode(answer.body, type=response_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise UnexpectedResponseError(f"{method} {path}: cannot decode answer: {e}", status=answer.status) from e

    async def start_run(self, request: StartRunRequest) -> StartRunResponse:
        return await self.request("POST", "/runs", StartRunResponse, request)

    async def get_run(self, run_id: str, wait_for: Sequence[str], timeout_ms: int | None) -> RunView:
        params: dict[str, str] = {}
        timeout = None
        if wait_for:
            params["wait_for"] = ",".join(wait_for)
            if timeout_ms is not None:
                params["timeout_ms"] = str(timeout_ms)
                timeout = timeout_ms / 1000 + POLL_MARGIN_S
        return await self.request("GET", f"/runs/{run_id}", RunView, params=params or None, timeout=timeout)

    async def send_event(self, run_id: str, name: str, request: SendEventRequest) -> SendEventResponse:
        return await self.request("POST", f"/runs/{run_id}/events/{name}", SendEventResponse, request)

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        return await self.request("POST", "/workers/register", RegisterWorkerResponse, request)

    async def claim(self, request: ClaimRequest) -> ClaimResponse:
        timeout = request.wait_ms / 1000 + POLL_MARGIN_S
        return await self.request("POST", "/workers/claim", ClaimResponse, request, timeout=timeout)

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        return await self.request("POST", "/workers/heartbeat", HeartbeatResponse, request)

    async def watch(self, request: WatchRequest) -> WatchResponse:
        timeout = request.wait_ms / 1000 + POLL_MARGIN_S
        return await self.request("POST", "/workers/watch", WatchResponse, request, timeout=timeout)

    async def release(self, request: ReleaseRequest) -> ReleaseResponse:
        return await self.request("POST", "/workers/release", ReleaseResponse, request)

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]:
        """``POST /workers/commands``; a batch holding a parking command waits for its answer longer."""
        timeout = PARKED_TIMEOUT_S if any(c.parks for c in commands) else None
        body = msgspec.json.encode(CommandBatch(commands=list(commands)))
        answer = await self.request("POST", COMMANDS_PATH, CommandResults, body, timeout=timeout)
        return answer.results


class LocalTransport:
    """The hot calls through an embedded server's in-process port; the rest as HTTP through its app.

    The port runs the same use cases with the same checks as the routes and raises the exceptions
    an HTTP answer would map to (see ``transport.py``).
    """

    max_in_flight: int | None = None

    def __init__(self, port: LocalPort, http: HttpTransport) -> None:
        self.port = port
        self._http = http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        response_type: type[R],
        body: msgspec.Struct | bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> R:
        """A call the port does not offer, through the app over HTTP (see :meth:`HttpTransport.request`)."""
        return await self._http.request(method, path, response_type, body, params=params, timeout=timeout)

    async def start_run(self, request: StartRunRequest) -> StartRunResponse:
        return await self.port.start_run(request)

    async def get_run(self, run_id: str, wait_for: Sequence[str], timeout_ms: int | None) -> RunView:
        return await self.port.get_run(run_id, tuple(wait_for), timeout_ms)

    async def send_event(self, run_id: str, name: str, request: SendEventRequest) -> SendEventResponse:
        return await self.port.send_event(run_id, name, request)

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        return await self.port.register_worker(request)

    async def claim(self, request: ClaimRequest) -> ClaimResponse:
        return await self.port.claim(request)

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        return await self.port.heartbeat(request)

    async def watch(self, request: WatchRequest) -> WatchResponse:
        return await self.port.watch(request)

    async def release(self, request: ReleaseRequest) -> ReleaseResponse:
        return await self._http.release(request)

    async def run_commands(self, commands: Sequence[Command]) -> list[CommandResult]:
        return await self.port.run_commands(list(commands))
