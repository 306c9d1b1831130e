"""The in-process port of an embedded server: the hot wire calls without HTTP.

``client(handler=server.handler)`` finds this object on ``app.state.aiki_local_port`` (see
``aiki.worker_sdk.transport``) and calls it instead of sending requests through the ASGI app. Each
method does what its route does, in the same order:

* the request Struct is encoded to JSON exactly as the SDK would send it, refused with 413 if the
  bytes exceed ``max_payload_bytes``, then decoded and converted as Litestar converts a JSON body
  (``strict=False``), with the same ``validation_error`` naming the field;
* the same service function runs (``aiki.platform.services``): input and event schemas, fencing
  by revision, one transaction each;
* a core error becomes the problem the HTTP error table (``aiki.api.errors``) would answer, and
  from it the SDK exception an HTTP client would raise.

Authorization: the port is offered only when IAM is off (``server()`` without ``iam=``), where the
HTTP guard lets every request through in the ``default`` namespace. With IAM on there is no port
and an embedded client goes through HTTP, so API keys, roles, rate limits and audit apply
unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from aiki.api import wire
from aiki.api.command_results import command_results
from aiki.api.errors import _is_db_unavailable, problem_body
from aiki.api.runs_routes import MAX_WAIT_MS, _statuses
from aiki.api.worker_routes import batch_max_bytes
from aiki.platform.db.integrity import CONFLICT_DETAIL, describe, integrity_violation
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.errors import CoreError
from aiki.platform.domain.values import Run
from aiki.platform.services import executions
from aiki.platform.services import runs as run_service
from aiki.platform.services.commands.dispatch import apply_commands
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.errors import AikiError
from aiki.worker_sdk.transport import error_from_problem

log = logging.getLogger("aiki.api")

S = TypeVar("S", bound=msgspec.Struct)
R = TypeVar("R")

_API = "/api/v1"


class LocalPort:
    """Answers the SDK's hot wire calls in-process for one server (IAM off: ``default`` namespace)."""

    def __init__(self, services: Services, namespace_id: str = DEFAULT_NAMESPACE_ID) -> None:
        self._svc = services
        self._ns = namespace_id
        self._max_body = services.settings.max_payload_bytes
        self._max_batch = batch_max_bytes(services)

    # -- the wire calls ---------------------------------------------------------------------

    async def start_run(self, request: p.StartRunRequest) -> p.StartRunResponse:
        path = "/runs"
        req = self._body(request, p.StartRunRequest, path)
        return wire.started_run(await self._call(path, lambda: run_service.start_run(self._svc, self._ns, req)))

    async def get_run(self, run_id: str, wait_for: Sequence[str], timeout_ms: int | None) -> p.RunView:
        path = f"/runs/{run_id}"
        svc, ns = self._svc, self._ns
        if not wait_for or not timeout_ms:
            return wire.run_view(await self._call(path, lambda: run_service.get_run(svc, ns, run_id)))
        if not 0 <= timeout_ms <= MAX_WAIT_MS:
            raise self._problem(
                path,
                "validation_error",
                f"timeout_ms: Expected `int` >= 0 and <= {MAX_WAIT_MS}",
                field="$.timeout_ms",
            )

        async def wait() -> Run:
            statuses = _statuses(",".join(wait_for))
            return await run_service.wait_for_run(svc, ns, run_id, statuses, timeout_ms / 1000)

        return wire.run_view(await self._call(path, wait))

    async def send_event(self, run_id: str, name: str, request: p.SendEventRequest) -> p.SendEventResponse:
        path = f"/runs/{run_id}/events/{name}"
        req = self._body(request, p.SendEventRequest, path)
        return wire.sent_event(
            await self._call(path, lambda: run_service.send_event(self._svc, self._ns, run_id, name, req))
        )

    async def register_worker(self, request: p.RegisterWorkerRequest) -> p.RegisterWorkerResponse:
        path = "/workers/register"
        req = self._body(request, p.RegisterWorkerRequest, path)
        return wire.registration(
            await self._call(path, lambda: executions.register_worker(self._svc, self._ns, req)), None
        )

    async def claim(self, request: p.ClaimRequest) -> p.ClaimResponse:
        path = "/workers/claim"
        req = self._body(request, p.ClaimRequest, path)
        return wire.claimed(await self._call(path, lambda: executions.claim(self._svc, self._ns, req)))

    async def heartbeat(self, request: p.HeartbeatRequest) -> p.HeartbeatResponse:
        path = "/workers/heartbeat"
        req = self._body(request, p.HeartbeatRequest, path)
        return wire.heartbeat(await self._call(path, lambda: executions.heartbeat(self._svc, self._ns, req)))

    async def watch(self, request: p.WatchRequest) -> p.WatchResponse:
        path = "/workers/watch"
        req = self._body(request, p.WatchRequest, path)
        return wire.watch(await self._call(path, lambda: executions.watch(self._svc, self._ns, req)))

    async def run_commands(self, commands: list[p.Command]) -> list[p.CommandResult]:
        """``POST /workers/commands``: one result per command (a refusal as its problem), in order."""
        path = "/workers/commands"
        batch = self._body(p.CommandBatch(commands=commands), p.CommandBatch, path, self._max_batch)
        svc, ns, limit = self._svc, self._ns, self._max_body
        outcomes = await self._call(path, lambda: apply_commands(svc, ns, batch.commands, limit=limit))
        return command_results(batch.commands, outcomes)

    # -- what every route does around its service call -------------------------------------

    def _body(self, request: msgspec.Struct, type_: type[S], path: str, max_body: int | None = None) -> S:
        """The request as the route would receive it: size-limited, then converted like Litestar."""
        raw = msgspec.json.encode(request)
        if len(raw) > (max_body or self._max_body):
            raise self._problem(path, "payload_too_large", "the request body exceeds the server's size limit")
        try:
            return msgspec.convert(msgspec.json.decode(raw), type_, strict=False, str_keys=True)
        except msgspec.ValidationError as e:
            raise self._invalid_body(path, str(e)) from None

    async def _call(self, path: str, call: Callable[[], Awaitable[R]]) -> R:
        try:
            return await call()
        except CoreError as e:
            raise self._problem(path, e.code, e.message, field=e.field, run_id=e.run_id) from None
        except AikiError:
            raise
        except Exception as e:
            if _is_db_unavailable(e):
                log.warning("database unavailable: %s", e)
                raise self._problem(path, "unavailable", "the database is unavailable; retry shortly") from e
            if (violation := integrity_violation(e)) is not None:
                log.warning("conflict on local call %s: %s", path, describe(violation))
                raise self._problem(path, "conflict", CONFLICT_DETAIL) from None
            log.exception("unhandled error on local call %s", path)
            raise self._problem(path, "internal_error", "an internal error occurred; it has been logged") from e

    def _invalid_body(self, path: str, message: str) -> AikiError:
        # Litestar names the body field from msgspec's "... - at `$.x`" suffix, else the body itself.
        text, _, where = message.partition(" - at `$.")
        key = where[:-1] if where.endswith("`") else "data"
        return self._problem(path, "validation_error", f"{key}: {text}", field=f"$.{key}")

    def _problem(
        self, path: str, code: str, detail: str, *, field: str | None = None, run_id: str | None = None
    ) -> AikiError:
        problem = problem_body(code, detail, _API + path, field=field, run_id=run_id)
        return error_from_problem(problem.status, problem, retry_after="1" if problem.status == 503 else None)


def local_port_for(services: Services, *, iam_enabled: bool) -> LocalPort | None:
    """The port to offer on the app: only without IAM (see the module docstring)."""
    return None if iam_enabled else LocalPort(services)
