"""Client API: runs and their events."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from aiki.api import query_routes, wire, wire_reads
from aiki.api.auth import policy
from aiki.api.deps import NamespaceId, Svc
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.domain.run_states import ALL_STATUSES
from aiki.platform.services import lifecycle, queries
from aiki.platform.services import runs as run_service
from aiki.worker_sdk import protocol as p

MAX_WAIT_MS = 60_000


def _statuses(value: str | None) -> list[str]:
    if not value:
        return []
    statuses = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in ALL_STATUSES]
    if unknown:
        raise InputInvalid(f"unknown status {unknown[0]!r}", field="status")
    return statuses


class RunController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]

    @post(
        "/",
        summary="Start a run",
        status_code=201,
        responses={200: ResponseSpec(p.StartRunResponse, description="The run this reference id already started")},
        opt=policy("runs:write"),
    )
    async def start(
        self, data: JSONBody[p.StartRunRequest], svc: Svc, namespace_id: NamespaceId
    ) -> Response[p.StartRunResponse]:
        result = await run_service.start_run(svc, namespace_id, data)
        return Response(wire.started_run(result), status_code=201 if result.created else 200)

    @get("/", summary="List runs, newest first, with filters and a keyset cursor", opt=policy("runs:read"))
    async def list_runs(
        self,
        svc: Svc,
        namespace_id: NamespaceId,
        status: Annotated[
            list[str] | None, QueryParameter(description="repeat it or separate statuses with commas")
        ] = None,
        workflow: FromQuery[str | None] = None,
        version: FromQuery[str | None] = None,
        reference_id: FromQuery[str | None] = None,
        schedule_id: Annotated[
            str | None, QueryParameter(description="runs started by this schedule (reference ids schedule:{id}:...)")
        ] = None,
        parent_run_id: FromQuery[str | None] = None,
        pool: Annotated[str | None, QueryParameter(description="a pool name; 'default' for runs without one")] = None,
        created_after: Annotated[
            str | None, QueryParameter(description="inclusive; milliseconds since the epoch or ISO 8601")
        ] = None,
        created_before: Annotated[
            str | None, QueryParameter(description="exclusive; milliseconds since the epoch or ISO 8601")
        ] = None,
        cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> p.RunListResponse:
        f = query_routes.run_filter(
            status=status,
            workflow=workflow,
            version=version,
            reference_id=reference_id,
            schedule_id=schedule_id,
            parent_run_id=parent_run_id,
            pool=pool,
            created_after=created_after,
            created_before=created_before,
        )
        return wire_reads.run_page(await queries.list_runs(svc, namespace_id, f, cursor=cursor, limit=limit))

    @get("/{run_id:str}", summary="Get a run; optionally wait for a status", opt=policy("runs:read"))
    async def get_run(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        wait_for: FromQuery[str | None] = None,
        timeout_ms: Annotated[int, QueryParameter(ge=0, le=MAX_WAIT_MS)] = 0,
    ) -> p.RunView:
        if wait_for is None or timeout_ms == 0:
            return wire.run_view(await run_service.get_run(svc, namespace_id, run_id))
        view = await run_service.wait_for_run(svc, namespace_id, run_id, _statuses(wait_for), timeout_ms / 1000)
        return wire.run_view(view)

    @get("/{run_id:str}/history", summary="The run's status transitions, oldest first", opt=policy("runs:read"))
    async def history(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        group_by: Annotated[
            Literal["attempt"] | None, QueryParameter(description="'attempt': group the entries by workflow attempt")
        ] = None,
    ) -> list[p.HistoryEntry] | p.GroupedHistory:
        if group_by == "attempt":
            return wire_reads.grouped_history(await queries.grouped_history(svc, namespace_id, run_id))
        return wire.history(await run_service.run_history(svc, namespace_id, run_id))

    @post(
        "/{run_id:str}/events/{name:str}",
        summary="Send an event to a run",
        status_code=201,
        responses={200: ResponseSpec(p.SendEventResponse, description="The event this reference id already sent")},
        opt=policy("runs:write"),
    )
    async def send_event(
        self,
        run_id: FromPath[str],
        name: FromPath[str],
        data: JSONBody[p.SendEventRequest],
        svc: Svc,
        namespace_id: NamespaceId,
    ) -> Response[p.SendEventResponse]:
        result = await run_service.send_event(svc, namespace_id, run_id, name, data)
        return Response(wire.sent_event(result), status_code=201 if result.created else 200)

    @post(
        "/{run_id:str}/cancel",
        summary="Cancel a live run and its live children (idempotent: a cancelled run is answered as it is)",
        status_code=200,
        opt=policy("runs:manage", audit="run.cancel"),
    )
    async def cancel(
        self, run_id: FromPath[str], data: JSONBody[p.CancelRunRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.RunView:
        return wire.run_view(await run_service.cancel_run(svc, namespace_id, run_id, data.reason))

    @post(
        "/{run_id:str}/pause",
        summary="Pause a scheduled, queued or running run (fences its executor)",
        status_code=200,
        opt=policy("runs:manage", audit="run.pause"),
    )
    async def pause(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        data: JSONBody[p.RunActionRequest | None] = None,
    ) -> p.RunView:
        return wire.run_view(await lifecycle.act(svc, namespace_id, run_id, "pause", data.reason if data else None))

    @post(
        "/{run_id:str}/resume",
        summary="Resume a paused run",
        status_code=200,
        opt=policy("runs:manage", audit="run.resume"),
    )
    async def resume(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        data: JSONBody[p.RunActionRequest | None] = None,
    ) -> p.RunView:
        return wire.run_view(await lifecycle.act(svc, namespace_id, run_id, "resume", data.reason if data else None))

    @post(
        "/{run_id:str}/wake",
        summary="End a sleeping run's sleep early",
        status_code=200,
        opt=policy("runs:manage", audit="run.wake"),
    )
    async def wake(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        data: JSONBody[p.RunActionRequest | None] = None,
    ) -> p.RunView:
        return wire.run_view(await lifecycle.act(svc, namespace_id, run_id, "wake", data.reason if data else None))

    @post(
        "/{run_id:str}/requeue",
        summary="Put a stalled run back in the ready queue",
        status_code=200,
        opt=policy("runs:manage", audit="run.requeue"),
    )
    async def requeue(
        self,
        run_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        data: JSONBody[p.RunActionRequest | None] = None,
    ) -> p.RunView:
        return wire.run_view(await lifecycle.act(svc, namespace_id, run_id, "requeue", data.reason if data else None))
