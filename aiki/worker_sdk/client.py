"""The HTTP client of the Aiki API and run handles."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from aiki.worker_sdk import serde
from aiki.worker_sdk.batching import WriteBatcher, encode_op
from aiki.worker_sdk.errors import (
    AikiError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    UnexpectedResponseError,
    UnexpectedStatusError,
    WaitTimeoutError,
)
from aiki.worker_sdk.http_backends import (
    AiohttpBackend,
    HttpAnswer,
    HttpBackend,
    HttpxBackend,
    send_retrying_unavailable,
)
from aiki.worker_sdk.protocol import (
    TERMINAL_STATUSES,
    BatchOutcome,
    CancelRunRequest,
    CancelRunsRequest,
    CancelRunsResponse,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    HistoryEntry,
    Problem,
    RecordTaskRequest,
    RecordTaskResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReleaseRequest,
    ReleaseResponse,
    RunActionRequest,
    RunDetail,
    RunListResponse,
    RunView,
    SendEventRequest,
    SendEventResponse,
    StartChildRequest,
    StartChildResponse,
    StartRunRequest,
    StartRunResponse,
    TransitionRequest,
    TransitionResponse,
    WatchRequest,
    WatchResponse,
    WorkerBatchResponse,
    WorkerListResponse,
    WorkflowListResponse,
)
from aiki.worker_sdk.transport import LocalPort, error_from_problem, find_local_port

R = TypeVar("R")
O = TypeVar("O")  # noqa: E741

API_PREFIX = "/api/v1"
# Long-polls are answered by the server at its own deadline; the HTTP timeout only guards against
# a server that never answers, so it is the poll time plus this margin.
_POLL_MARGIN_S = 15.0
_POLL_SLICE_MS = 20_000
_EMPTY = msgspec.json.encode({})
# A held sleep's resume is answered when the sleep ends (at most the server's 30 s hold limit).
_PARKED_TIMEOUT_S = 30 + _POLL_MARGIN_S


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


class Client:
    """Talks to an Aiki server over HTTP (or in-process over ASGI).

    Build it with :func:`client`. One instance holds one connection pool; share it, and close it
    with :meth:`close` or ``async with``. In embedded mode the hot wire calls (start, wait, claim,
    record, transition ...) go to the server's local port instead (see ``transport.py``).
    """

    def __init__(self, http: HttpBackend, port: LocalPort | None = None) -> None:
        self._http = http
        self._port = port
        # Set when a server that takes batches registers this client's worker (HTTP only).
        self._batcher: WriteBatcher | None = None
        #: The server's request size limit, learnt when a worker registers (None: unknown).
        self.payload_max_bytes: int | None = None
        #: The longest sleep the server lets an executor hold in memory (None: none).
        self.sleep_hold_max_ms: int | None = None

    async def __aenter__(self) -> Client:
        """The client itself; leaving the ``async with`` block closes it."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (see :meth:`close`)."""
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (idempotent; a client that never sent a request holds none)."""
        if self._batcher is not None:
            await self._batcher.aclose()
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
        """Send one API request and decode the answer.

        Args:
            method: HTTP method.
            path: Path below ``/api/v1``.
            response_type: Type to decode the JSON answer into.
            body: Request body (a wire Struct, or its JSON already encoded), if any.
            params: Query parameters.
            timeout: Seconds before the request is abandoned (default: the client's).

        A 503 answer (the server's database is unavailable or busy; nothing was done) is retried a
        few times with backoff before it is raised.

        Raises:
            AikiError: The subclass matching the server's problem ``code``;
                ``ServerUnavailableError`` on connection errors and 5xx.
        """
        content = body if body is None or isinstance(body, bytes) else msgspec.json.encode(body)
        answer = await send_retrying_unavailable(self._http, method, API_PREFIX + path, content, params, timeout)
        if answer.status >= 400:
            raise error_from_response(answer)
        try:
            return msgspec.json.decode(answer.body, type=response_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise UnexpectedResponseError(f"{method} {path}: cannot decode answer: {e}", status=answer.status) from e

    # -- client API ---------------------------------------------------------------------------

    async def start_run(self, request: StartRunRequest) -> StartRunResponse:
        """``POST /runs``."""
        if self._port is not None:
            return await self._port.start_run(request)
        return await self.request("POST", "/runs", StartRunResponse, request)

    async def get_run(self, run_id: str, *, wait_for: Sequence[str] = (), timeout_ms: int | None = None) -> RunView:
        """``GET /runs/{id}``, long-polling while ``wait_for`` statuses are not reached."""
        if self._port is not None:
            return await self._port.get_run(run_id, tuple(wait_for), timeout_ms)
        params: dict[str, str] = {}
        timeout = None
        if wait_for:
            params["wait_for"] = ",".join(wait_for)
            if timeout_ms is not None:
                params["timeout_ms"] = str(timeout_ms)
                timeout = timeout_ms / 1000 + _POLL_MARGIN_S
        return await self.request("GET", f"/runs/{run_id}", RunView, params=params or None, timeout=timeout)

    async def list_runs(self, **filters: str) -> RunListResponse:
        """``GET /runs``: one page of runs, newest first.

        Filters: ``status`` (comma-separated), ``workflow``, ``version``, ``reference_id``,
        ``schedule_id``, ``parent_run_id``, ``pool``, ``created_after``/``created_before`` (ms or
        ISO 8601); ``limit``; ``cursor`` (the previous page's ``next_cursor``).

        Args:
            **filters: The filters above, as strings.

        Returns:
            One page of runs and the cursor of the next.
        """
        return await self.request("GET", "/runs", RunListResponse, params=filters)

    async def run_detail(self, run_id: str) -> RunDetail:
        """``GET /runs/{id}/detail``: the run with its tasks, events, sleeps and children."""
        return await self.request("GET", f"/runs/{run_id}/detail", RunDetail)

    async def cancel_runs(self, request: CancelRunsRequest) -> CancelRunsResponse:
        """``POST /runs/cancel``: cancel every live run matching the request's filters."""
        return await self.request("POST", "/runs/cancel", CancelRunsResponse, request)

    async def list_workers(self) -> WorkerListResponse:
        """``GET /workers``: registered workers, their versions, pools, load and liveness."""
        return await self.request("GET", "/workers", WorkerListResponse)

    async def list_workflows(self) -> WorkflowListResponse:
        """``GET /workflows``: workflows, their versions and run counts by status."""
        return await self.request("GET", "/workflows", WorkflowListResponse)

    async def find_run_by_reference(self, workflow: str, version: str, reference_id: str) -> RunView:
        """The run of ``workflow@version`` with this reference id.

        Args:
            workflow: The workflow name.
            version: The workflow version.
            reference_id: The reference id the run was started with.

        Returns:
            The run as the server sees it.

        Raises:
            RunNotFoundError: There is none.
        """
        page = await self.list_runs(workflow=workflow, version=version, reference_id=reference_id)
        for view in page.items:
            if view.reference_id == reference_id:
                return view
        raise RunNotFoundError(f"no run of {workflow}@{version} with reference {reference_id!r}")

    async def history(self, run_id: str) -> list[HistoryEntry]:
        """``GET /runs/{id}/history``."""
        return await self.request("GET", f"/runs/{run_id}/history", list[HistoryEntry])

    async def send_event(self, run_id: str, name: str, request: SendEventRequest) -> SendEventResponse:
        """``POST /runs/{id}/events/{name}``."""
        if self._port is not None:
            return await self._port.send_event(run_id, name, request)
        return await self.request("POST", f"/runs/{run_id}/events/{name}", SendEventResponse, request)

    async def cancel_run(self, run_id: str, reason: str | None = None) -> RunView:
        """``POST /runs/{id}/cancel`` (idempotent: an already cancelled run is returned as it is)."""
        return await self.request("POST", f"/runs/{run_id}/cancel", RunView, CancelRunRequest(reason=reason))

    async def run_action(self, run_id: str, action: str, reason: str | None = None) -> RunView:
        """``POST /runs/{id}/{action}`` for ``pause``, ``resume``, ``wake`` and ``requeue``."""
        return await self.request("POST", f"/runs/{run_id}/{action}", RunView, RunActionRequest(reason=reason))

    # -- worker protocol ----------------------------------------------------------------------

    async def register_worker(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        """``POST /workers/register``."""
        if self._port is not None:
            response = await self._port.register_worker(request)
        else:
            response = await self.request("POST", "/workers/register", RegisterWorkerResponse, request)
            if response.batch_max_bytes and self._batcher is None:
                self._batcher = WriteBatcher(self._send_batch, response.batch_max_bytes)
        self.payload_max_bytes = response.payload_max_bytes
        self.sleep_hold_max_ms = response.sleep_hold_max_ms
        return response

    async def claim(self, request: ClaimRequest) -> ClaimResponse:
        """``POST /workers/claim`` (long-polls up to ``request.wait_ms``)."""
        if self._port is not None:
            return await self._port.claim(request)
        timeout = request.wait_ms / 1000 + _POLL_MARGIN_S
        return await self.request("POST", "/workers/claim", ClaimResponse, request, timeout=timeout)

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        """``POST /workers/heartbeat``."""
        if self._port is not None:
            return await self._port.heartbeat(request)
        return await self.request("POST", "/workers/heartbeat", HeartbeatResponse, request)

    async def watch(self, request: WatchRequest) -> WatchResponse:
        """``POST /workers/watch`` (long-polls up to ``request.wait_ms``)."""
        if self._port is not None:
            return await self._port.watch(request)
        timeout = request.wait_ms / 1000 + _POLL_MARGIN_S
        return await self.request("POST", "/workers/watch", WatchResponse, request, timeout=timeout)

    async def release(self, request: ReleaseRequest) -> ReleaseResponse:
        """``POST /workers/release``: a stopping worker hands back the runs it holds."""
        return await self.request("POST", "/workers/release", ReleaseResponse, request)

    async def record_task(self, run_id: str, request: RecordTaskRequest) -> RecordTaskResponse:
        """``POST /runs/{id}/tasks``."""
        if self._port is not None:
            return await self._port.record_task(run_id, request)
        if self._batcher is not None:
            op = encode_op("record_task", run_id, request)
            if self._batcher.fits(op):
                outcome = await self._batcher.submit(op)
                return _answer(outcome, outcome.record, f"/runs/{run_id}/tasks")
        return await self.request("POST", f"/runs/{run_id}/tasks", RecordTaskResponse, request)

    async def start_child(self, run_id: str, request: StartChildRequest) -> StartChildResponse:
        """``POST /runs/{id}/children``."""
        if self._port is not None:
            return await self._port.start_child(run_id, request)
        return await self.request("POST", f"/runs/{run_id}/children", StartChildResponse, request)

    async def transition(self, run_id: str, request: TransitionRequest) -> TransitionResponse:
        """``POST /runs/{id}/transition``."""
        if self._port is not None:
            return await self._port.transition(run_id, request)
        if request.kind == "resume_sleep":
            # The server answers it at the sleep's end: alone, so that it holds up no batch.
            path = f"/runs/{run_id}/transition"
            return await self.request("POST", path, TransitionResponse, request, timeout=_PARKED_TIMEOUT_S)
        if self._batcher is not None:
            op = encode_op("transition", run_id, request)
            if self._batcher.fits(op):
                outcome = await self._batcher.submit(op)
                return _answer(outcome, outcome.transition, f"/runs/{run_id}/transition")
        return await self.request("POST", f"/runs/{run_id}/transition", TransitionResponse, request)

    async def _send_batch(self, body: bytes) -> WorkerBatchResponse:
        return await self.request("POST", "/workers/batch", WorkerBatchResponse, body)


def _seconds(value: timedelta | float | None, name: str) -> float | None:
    """A duration argument in seconds: a ``timedelta`` or a number (not a bool), or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}")


def as_timedelta(value: timedelta | float | None, name: str) -> timedelta | None:
    """A duration argument as a ``timedelta``: a ``timedelta`` or seconds as a number, or None.

    Raises:
        TypeError: Anything else (a bool too), naming the argument ``name``.
    """
    seconds = _seconds(value, name)
    return None if seconds is None else timedelta(seconds=seconds)


def _answer(outcome: BatchOutcome, response: R | None, path: str) -> R:
    """One operation's response from its batch outcome, or the exception its own route would cause."""
    if outcome.problem is not None:
        status = outcome.problem.status
        raise error_from_problem(status, outcome.problem, retry_after="1" if status == 503 else None)
    if response is None:
        raise UnexpectedResponseError(f"POST {API_PREFIX}{path}: the batch answered neither a response nor a problem")
    return response


def client(
    *,
    url: str | None = None,
    api_key: str | None = None,
    handler: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: timedelta = timedelta(seconds=30),
    local_port: bool = True,
) -> Client:
    """Build a client.

    Args:
        url: Base URL of a remote server, e.g. ``"https://aiki.example.com"``.
        api_key: API key sent as ``Authorization: Bearer <key>``.
        handler: An ASGI app (``server(...).handler``) to call in-process, without a network hop.
        transport: Any httpx transport (e.g. ``httpx.MockTransport`` in tests).
        timeout: Default request timeout (long-polls extend it as needed).
        local_port: With ``handler=``, let an Aiki server's app answer the hot calls in-process
            when it offers that (same validation, limits and fencing as HTTP, without the HTTP
            round trip). False sends every call through the ASGI app.

    Raises:
        ValueError: No target was given, or ``handler`` together with another one.

    Returns:
        The client; close it with ``await client.close()`` or use it in ``async with``.

    Example:
        An ``httpx.MockTransport`` stands in for a server; errors arrive as the SDK's exceptions:

        >>> import asyncio
        >>> import httpx
        >>> import aiki
        >>> def server(request: httpx.Request) -> httpx.Response:
        ...     problem = {"type": "about:blank", "title": "Not Found", "status": 404, "code": "run_not_found"}
        ...     return httpx.Response(404, json=problem)
        >>> async def main() -> None:
        ...     async with aiki.client(transport=httpx.MockTransport(server)) as c:
        ...         await c.get_run("r-1")
        >>> asyncio.run(main())
        Traceback (most recent call last):
        ...
        aiki.worker_sdk.errors.RunNotFoundError: ...
        >>> aiki.client()
        Traceback (most recent call last):
        ...
        ValueError: pass url=, handler= or transport=

        Against a server over the network::

            async with aiki.client(url="https://aiki.example.com", api_key=key) as client:
                handle = await hello_v1.start(client, "ada")
                print(await handle.result())
    """
    if handler is not None and (url is not None or transport is not None):
        raise ValueError("pass handler= alone: it is served in-process")
    if handler is None and url is None and transport is None:
        raise ValueError("pass url=, handler= or transport=")
    port = None
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    if url is not None and transport is None:
        # Over the network: aiohttp (see http_backends.py for why).
        return Client(AiohttpBackend(url, headers, timeout.total_seconds()))
    if handler is not None:
        transport = httpx.ASGITransport(app=handler)
        # An embedded Aiki server answers the hot calls in-process (same checks, no HTTP).
        port = find_local_port(handler) if local_port else None
    http = httpx.AsyncClient(
        base_url=url or "http://aiki",
        transport=transport,
        headers=headers,
        timeout=timeout.total_seconds(),
    )
    return Client(HttpxBackend(http), port)


class EventSender:
    """Sends one named event to a run: ``handle.events.<name>``.

    Attributes:
        name: The event's name.
    """

    def __init__(self, client: Client, run_id: str, name: str, type: Any) -> None:
        """A sender of the event ``name`` (payload ``type``) to ``run_id``; ``handle.events`` builds it."""
        self._client, self._run_id, self.name, self._type = client, run_id, name, type

    async def send(self, data: Any = None, reference_id: str | None = None) -> SendEventResponse:
        """Send the event.

        Args:
            data: The payload; it must fit the event's declared type.
            reference_id: De-duplication key: a second send with it creates nothing.

        Returns:
            The server's receipt of the event.

        Raises:
            ValidationError: The payload does not fit its type (no request is sent).
        """
        raw = serde.encode_checked(data, self._type)
        request = SendEventRequest(data=msgspec.Raw(raw), reference_id=reference_id)
        return await self._client.send_event(self._run_id, self.name, request)


class _HandleEvents:
    def __init__(self, client: Client, run_id: str, types: dict[str, Any]) -> None:
        self._client, self._run_id, self._types = client, run_id, types

    def __getattr__(self, name: str) -> EventSender:
        if name.startswith("_") or name not in self._types:
            raise AttributeError(f"the workflow declares no event {name!r}")
        return EventSender(self._client, self._run_id, name, self._types[name])


class RunHandle(Generic[O]):
    """A handle on one run, from ``version.start()`` or ``version.get_handle()``.

    Example::

        handle = await orders_v1.start(client, 5)
        await handle.events.approved.send(True)
        print(await handle.result())  # waits for the run to complete

    Attributes:
        id: The run id.
        events: ``handle.events.<name>.send(data)`` sends the declared event ``name``.
    """

    def __init__(self, client: Client, run_id: str, output_type: Any, event_types: dict[str, Any]) -> None:
        """A handle on ``run_id``; the workflow version's ``start`` and ``get_handle`` build it.

        Args:
            client: The Aiki client.
            run_id: The run's id.
            output_type: The type :meth:`result` decodes the output into.
            event_types: The payload type of each event the version declares, by name.
        """
        self._client = client
        self.id = run_id
        self._output_type = output_type
        self.events = _HandleEvents(client, run_id, event_types)

    async def describe(self) -> RunView:
        """The run as the server sees it now."""
        return await self._client.get_run(self.id)

    async def status(self) -> str:
        """The run's current status (``queued``, ``running``, ``completed`` ...)."""
        return (await self.describe()).status

    async def wait_for_status(self, status: str | Sequence[str], timeout: timedelta | float | None = None) -> RunView:
        """Wait until the run reaches ``status`` (or one of several).

        Args:
            status: The status, or statuses, to wait for.
            timeout: Give up after this long: a ``timedelta``, or seconds as a number (as
                ``asyncio.wait_for`` takes them). None: wait without limit.

        Returns:
            The run as it was when the status was reached.

        Raises:
            RunFailedError: The run failed instead.
            RunCancelledError: The run was cancelled instead.
            UnexpectedStatusError: The run completed while another status was awaited.
            WaitTimeoutError: ``timeout`` elapsed first.
            TypeError: ``timeout`` is neither a number, a ``timedelta`` nor None.
        """
        wanted = (status,) if isinstance(status, str) else tuple(status)
        seconds = _seconds(timeout, "timeout")
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            slice_ms = _POLL_SLICE_MS
            if deadline is not None:
                slice_ms = min(slice_ms, max(0, int((deadline - time.monotonic()) * 1000)))
            view = await self._client.get_run(self.id, wait_for=wanted, timeout_ms=slice_ms)
            if view.status in wanted:
                return view
            if view.status in TERMINAL_STATUSES:
                raise self._terminal_error(view, wanted)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(self.id, view.status)

    async def result(self) -> O:
        """Wait for the run to end and return its decoded output.

        Returns:
            The output, decoded to the version's return type.

        Raises:
            RunFailedError: The run failed.
            RunCancelledError: The run was cancelled.
        """
        view = await self.wait_for_status("completed")
        output: O = serde.decode(view.output, self._output_type)
        return output

    async def cancel(self, reason: str | None = None) -> RunView:
        """Cancel the run (and, on the server, its live children).

        Idempotent: cancelling a run that is already cancelled changes nothing and returns it as
        it is (so a retried or repeated cancel is safe).

        Args:
            reason: Why, recorded in the run's history and as its error's message.

        Returns:
            The run as it is now (``cancelled``).

        Raises:
            InvalidTransitionError: The run already completed or failed.
        """
        return await self._client.cancel_run(self.id, reason)

    async def pause(self, reason: str | None = None) -> RunView:
        """Pause a scheduled, queued or running run: it is not executed until :meth:`resume`.

        A running run stops at its next step boundary: the task under way finishes and its result
        is recorded, and no new task, child or sleep starts (the run's status is ``paused`` at
        once). Resumed, it goes on from there: no side effect runs twice.

        Args:
            reason: Why, recorded with the change in the run's history.

        Raises:
            ActionNotAllowedError: The run is in another status.
        """
        return await self._client.run_action(self.id, "pause", reason)

    async def resume(self, reason: str | None = None) -> RunView:
        """Resume a paused run: ``queued`` again (``scheduled`` if its delayed start is still ahead).

        A run paused while running whose executor has not reached its step boundary yet is
        ``running`` again: that executor simply goes on.

        Args:
            reason: Why, recorded with the change in the run's history.

        Raises:
            ActionNotAllowedError: The run is not paused.
        """
        return await self._client.run_action(self.id, "resume", reason)

    async def wake(self, reason: str | None = None) -> RunView:
        """End the run's current sleep early (the sleep returns ``cancelled=True``).

        Args:
            reason: Why, recorded with the change in the run's history.

        Raises:
            ActionNotAllowedError: The run is not sleeping.
        """
        return await self._client.run_action(self.id, "wake", reason)

    async def requeue(self, reason: str | None = None) -> RunView:
        """Put a stalled run (queued too long without a claim) back in the ready queue.

        Args:
            reason: Why, recorded with the change in the run's history.

        Raises:
            ActionNotAllowedError: The run is not stalled.
        """
        return await self._client.run_action(self.id, "requeue", reason)

    def _terminal_error(self, view: RunView, wanted: tuple[str, ...]) -> AikiError:
        if view.status == "failed":
            return RunFailedError(self.id, view.error)
        if view.status == "cancelled":
            return RunCancelledError(self.id)
        return UnexpectedStatusError(self.id, view.status, wanted)

    def __repr__(self) -> str:
        """``<RunHandle id>``."""
        return f"<RunHandle {self.id}>"
