"""The client of the Aiki API (start, find, query, signal and act on runs) and run handles.

The worker protocol (registration, claims, heartbeats, an executor's writes) is not here: a worker
reaches the server through the same client's transport by ``_worker_connection.connect(client)``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from aiki.worker_sdk import serde
from aiki.worker_sdk._http_backends import AiohttpBackend, HttpxBackend
from aiki.worker_sdk._transport import HttpTransport, LocalTransport, Transport
from aiki.worker_sdk.errors import (
    AikiError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    UnexpectedStatusError,
    WaitTimeoutError,
)
from aiki.worker_sdk.protocol import (
    TERMINAL_STATUSES,
    CancelRunRequest,
    CancelRunsRequest,
    CancelRunsResponse,
    HistoryEntry,
    RunActionRequest,
    RunDetail,
    RunListResponse,
    RunView,
    SendEventRequest,
    SendEventResponse,
    StartRunRequest,
    StartRunResponse,
    WorkerListResponse,
    WorkflowListResponse,
)
from aiki.worker_sdk.transport import find_local_port

R = TypeVar("R")
O = TypeVar("O")  # noqa: E741

_POLL_SLICE_MS = 20_000


class Client:
    """Talks to an Aiki server over HTTP (or in-process over ASGI).

    Build it with :func:`client`. One instance holds one connection pool; share it, and close it
    with :meth:`close` or ``async with``. In embedded mode the hot wire calls (start, wait, claim,
    an executor's writes ...) go to the server's local port instead (see ``_transport.py``).

    Attributes:
        transport: How the calls travel (HTTP, or an embedded server's port).
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> Client:
        """The client itself; leaving the ``async with`` block closes it."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (see :meth:`close`)."""
        await self.close()

    def close_with(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Call ``closer`` when the client closes, before its connections (e.g. a worker connection's)."""
        self._closers.append(closer)

    async def close(self) -> None:
        """Close the connection pool (idempotent; a client that never sent a request holds none)."""
        for closer in self._closers:
            await closer()
        await self.transport.aclose()

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
        return await self.transport.request(method, path, response_type, body, params=params, timeout=timeout)

    # -- client API ---------------------------------------------------------------------------

    async def start_run(self, request: StartRunRequest) -> StartRunResponse:
        """``POST /runs``."""
        return await self.transport.start_run(request)

    async def get_run(self, run_id: str, *, wait_for: Sequence[str] = (), timeout_ms: int | None = None) -> RunView:
        """``GET /runs/{id}``, long-polling while ``wait_for`` statuses are not reached."""
        return await self.transport.get_run(run_id, tuple(wait_for), timeout_ms)

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
        return await self.transport.send_event(run_id, name, request)

    async def cancel_run(self, run_id: str, reason: str | None = None) -> RunView:
        """``POST /runs/{id}/cancel`` (idempotent: an already cancelled run is returned as it is)."""
        return await self.request("POST", f"/runs/{run_id}/cancel", RunView, CancelRunRequest(reason=reason))

    async def run_action(self, run_id: str, action: str, reason: str | None = None) -> RunView:
        """``POST /runs/{id}/{action}`` for ``pause``, ``resume``, ``wake`` and ``requeue``."""
        return await self.request("POST", f"/runs/{run_id}/{action}", RunView, RunActionRequest(reason=reason))


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
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    if url is not None and transport is None:
        # Over the network: aiohttp (see _http_backends.py for why).
        return Client(HttpTransport(AiohttpBackend(url, headers, timeout.total_seconds())))
    port = None
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
    over_http = HttpTransport(HttpxBackend(http))
    return Client(over_http if port is None else LocalTransport(port, over_http))


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
