"""The worker protocol: register, claim (long-poll), heartbeat, watch (long-poll), record a task, transition a run,
batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from litestar import Controller, Request, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody

from aiki.api import single_commands, wire
from aiki.api.auth import policy
from aiki.api.command_results import command_results
from aiki.api.deps import NamespaceId, Svc
from aiki.platform.domain.errors import StaleRevision
from aiki.platform.services import executions, leases
from aiki.platform.services.commands.dispatch import Outcome, apply_commands
from aiki.platform.services.context import Services
from aiki.platform.services.delivery_body import BATCH_BODY_FACTOR
from aiki.worker_sdk import protocol as p

T = TypeVar("T")

COMMANDS_PATH = "/api/v1/workers/commands"


def batch_max_bytes(services: Services) -> int:
    """The largest ``POST /workers/commands`` body this server takes."""
    return services.settings.max_payload_bytes * BATCH_BODY_FACTOR


class WorkerController(Controller):
    path = "/api/v1/workers"
    tags = ["worker protocol"]

    @post(
        "/register",
        summary="Register a worker and the versions it serves",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def register(
        self, data: JSONBody[p.RegisterWorkerRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.RegisterWorkerResponse:
        registered = await executions.register_worker(svc, namespace_id, data)
        # Workers send their commands in batches up to this size.
        return wire.registration(registered, batch_max_bytes(svc))

    @post("/claim", summary="Claim ready runs (long-poll)", status_code=200, opt=policy("worker:execute"))
    async def claim(
        self, data: JSONBody[p.ClaimRequest], svc: Svc, namespace_id: NamespaceId, request: Request[Any, Any, Any]
    ) -> p.ClaimResponse:
        # A claimer that is gone (a killed worker) must be handed nothing: its runs would wait out
        # a whole lease and use up a recovery. Its connection closing is the only sign of it. The
        # claim is not cancelled then but told (``gone``): it withdraws, and hands back what it took.
        claimed = await _while_connected(
            request, lambda gone: executions.claim(svc, namespace_id, data, gone=gone), cancel=False
        )
        assert claimed is not None
        return wire.claimed(claimed)

    @post("/heartbeat", summary="Extend the leases of in-flight runs", status_code=200, opt=policy("worker:execute"))
    async def heartbeat(
        self, data: JSONBody[p.HeartbeatRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.HeartbeatResponse:
        return wire.heartbeat(await executions.heartbeat(svc, namespace_id, data))

    @post(
        "/watch",
        summary="Wait until one of the worker's executions must stop (long-poll)",
        description=(
            "Answered as soon as one of `runs` is fenced (its revision moved on: cancelled, timed out, "
            "recovered; `stale`: stop at once) or a pause of it is requested (`paused`: stop at the next "
            "step boundary), else after `wait_ms`. A newer watch of the same worker answers an older one "
            "parked on the same server (or, with Redis, on another) at once, empty."
        ),
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def watch(
        self, data: JSONBody[p.WatchRequest], svc: Svc, namespace_id: NamespaceId, request: Request[Any, Any, Any]
    ) -> p.WatchResponse:
        # A watch whose worker is gone (killed, or it closed the request) ends at once instead of
        # staying parked for its whole wait; nobody reads the answer.
        answer = await _while_connected(request, lambda _gone: executions.watch(svc, namespace_id, data))
        return wire.watch(answer) if answer is not None else p.WatchResponse()

    @post(
        "/release",
        summary="Hand back the leases of a stopping worker (its runs are queued again at once)",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def release(self, data: JSONBody[p.ReleaseRequest], svc: Svc, namespace_id: NamespaceId) -> p.ReleaseResponse:
        return wire.released(await leases.release(svc, namespace_id, data))


class ExecutionController(Controller):
    path = "/api/v1/runs/{run_id:str}"
    tags = ["worker protocol"]

    @post("/tasks", summary="Record a task attempt (fenced by revision)", status_code=200, opt=policy("worker:execute"))
    async def record_task(
        self, run_id: FromPath[str], data: JSONBody[p.RecordTaskRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.RecordTaskResponse:
        return await single_commands.record_task(svc, namespace_id, run_id, data)

    @post(
        "/transition",
        summary="Complete, fail or suspend a run (fenced by revision)",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def transition(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        data: JSONBody[p.TransitionRequest],
        svc: Svc,
        namespace_id: NamespaceId,
    ) -> p.TransitionResponse:
        if data.kind != "resume_sleep":
            return await single_commands.transition(svc, namespace_id, run_id, data)
        # A resume is parked until the sleep's end. If its executor is gone by then (its worker
        # stopped or died: the connection closed), resuming would lease the run to nobody until
        # the lease expires; leave the sleep to the server, which wakes the run after its grace.
        resumed = await _while_connected(
            request, lambda _gone: single_commands.transition(svc, namespace_id, run_id, data)
        )
        if resumed is None:
            raise StaleRevision(run_id, data.revision)
        return resumed

    @post(
        "/children",
        summary="Start a child run (memoized per entry, fenced by revision)",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def start_child(
        self, run_id: FromPath[str], data: JSONBody[p.StartChildRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.StartChildResponse:
        return await single_commands.start_child(svc, namespace_id, run_id, data)


async def _while_connected(
    request: Request[Any, Any, Any],
    work: Callable[[asyncio.Future[None]], Coroutine[Any, Any, T]],
    *,
    cancel: bool = True,
) -> T | None:
    """Await ``work(gone)``, where ``gone`` completes when the client of ``request`` disconnects.

    With ``cancel``, the work is cancelled when the client leaves first, and None returned (or its
    result, if it finished meanwhile); without, the work itself is left to act on ``gone``. The
    body has been read, so the next ASGI message is ``http.disconnect``: sent when the client
    closes the connection, or once the answer is out.
    """
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def listen() -> None:
        try:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    gone.set_result(None)
                    return
                if not message.get("more_body", False) and not message.get("body"):
                    return  # a server that answers at once instead of waiting cannot tell: do not spin
        except Exception:  # a server that refuses a receive() after the body: nothing to watch
            return

    listener = asyncio.ensure_future(listen())
    job = asyncio.ensure_future(work(gone))
    try:
        await asyncio.wait((job, gone) if cancel else (job,), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself is cancelled (server shutdown): so is the work
        job.cancel()
        raise
    finally:
        listener.cancel()
    if job.done():
        return job.result()
    job.cancel()
    await asyncio.wait((job,))  # let it roll back; it may also have finished meanwhile
    return None if job.cancelled() else job.result()


def commands_route(services: Services) -> HTTPRouteHandler:
    """``POST /workers/commands``, with the body limit of this server's settings."""

    async def run_commands(
        request: Request[Any, Any, Any], data: JSONBody[p.CommandBatch], svc: Svc, namespace_id: NamespaceId
    ) -> p.CommandResults:
        commands = data.commands
        if not any(c.parks for c in commands):
            outcomes = await apply_commands(svc, namespace_id, commands, limit=svc.settings.max_payload_bytes)
            return p.CommandResults(results=command_results(commands, outcomes))
        # A parked command (a resume at a sleep's end) whose executor is gone by then would lease
        # the run to nobody until the lease expires: leave the sleep to the server, which wakes
        # the run after its grace.
        applied = await _while_connected(
            request, lambda _gone: apply_commands(svc, namespace_id, commands, limit=svc.settings.max_payload_bytes)
        )
        gone: list[Outcome] = [StaleRevision(c.run_id, c.revision) for c in commands]
        return p.CommandResults(results=command_results(commands, applied if applied is not None else gone))

    return post(
        COMMANDS_PATH,
        summary="Apply executor commands (record tasks, end, suspend runs, start children)",
        description=(
            "Commands of one run are applied in their order; once one is refused, the run's later commands "
            "get the same problem and are not applied. Commands of different runs are independent, each "
            "fenced by its own revision. The answer lists one result per command, in order: its response or "
            f"its problem. At most {p.BATCH_MAX_COMMANDS} commands; each no larger than one request may be."
        ),
        status_code=200,
        tags=["worker protocol"],
        opt=policy("worker:execute"),
        request_max_body_size=batch_max_bytes(services),
    )(run_commands)
