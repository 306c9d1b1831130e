"""What an embedded server offers the SDK in process (its local port), and problem+json → SDK exceptions.

Over HTTP every call is a request. In embedded mode (``client(handler=server.handler)``) the
server may offer a *local port* on its app (``app.state.aiki_local_port``): an object with one
method per hot wire call (``run_commands`` for the executor's writes) that takes and returns the
same wire Structs as HTTP (``protocol.py``), runs the same server use cases with the same checks
(request decoding, payload size, schemas, fencing), and raises the same SDK exceptions an HTTP
answer would map to. The SDK finds it by duck typing, so it never imports server code; calls the
port does not offer still go over HTTP (``_transport.LocalTransport``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from aiki.worker_sdk.errors import (
    PROBLEM_CODES,
    AikiError,
    NotFoundError,
    RateLimitedError,
    ServerUnavailableError,
    UnexpectedResponseError,
    ValidationError,
)
from aiki.worker_sdk.protocol import (
    ClaimRequest,
    ClaimResponse,
    Command,
    CommandResult,
    HeartbeatRequest,
    HeartbeatResponse,
    Problem,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    RunView,
    SendEventRequest,
    SendEventResponse,
    StartRunRequest,
    StartRunResponse,
    WatchRequest,
    WatchResponse,
)

LOCAL_PORT_ATTRIBUTE = "aiki_local_port"


@runtime_checkable
class LocalPort(Protocol):
    """The wire calls an embedded server answers in-process (same Structs, same errors as HTTP)."""

    async def start_run(self, request: StartRunRequest) -> StartRunResponse: ...

    async def get_run(self, run_id: str, wait_for: Sequence[str], timeout_ms: int | None) -> RunView: ...

    async def send_event(self, run_id: str, name: str, request: SendEventRequest) -> SendEventResponse: ...

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse: ...

    async def claim(self, request: ClaimRequest) -> ClaimResponse: ...

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse: ...

    async def watch(self, request: WatchRequest) -> WatchResponse: ...

    async def run_commands(self, commands: list[Command]) -> list[CommandResult]: ...


def find_local_port(handler: Any) -> LocalPort | None:
    """The local port an ASGI app offers on its ``state``, if any (None: use HTTP)."""
    state = getattr(handler, "state", None)
    port = getattr(state, LOCAL_PORT_ATTRIBUTE, None) if state is not None else None
    return port if isinstance(port, LocalPort) else None


def error_from_problem(
    status: int,
    problem: Problem | None,
    *,
    fallback: str = "",
    retry_after: str | None = None,
) -> AikiError:
    """The SDK exception for an error answer: its status and problem+json body (None if unreadable).

    Args:
        status: The HTTP status (or the one the local port would have answered).
        problem: The decoded problem, if the body was one.
        fallback: The detail to use when there is no problem body.
        retry_after: The ``Retry-After`` header, if any.
    """
    detail = (problem.detail or problem.title) if problem else fallback
    run_id = problem.run_id if problem else None
    code = problem.code if problem else None
    if status == 429 or code == "rate_limited":
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            seconds = None
        return RateLimitedError(detail, retry_after=seconds, status=status)
    if code == "validation_error" or (code is None and status == 422):
        return ValidationError(detail, field=problem.field if problem else None, run_id=run_id, status=status)
    if code is not None and code in PROBLEM_CODES:
        return PROBLEM_CODES[code](detail, run_id=run_id, status=status)
    if status >= 500:
        return ServerUnavailableError(detail, status=status)
    if status == 404:
        return NotFoundError(detail, run_id=run_id, status=status)
    return UnexpectedResponseError(detail, problem_code=code, run_id=run_id, status=status)
