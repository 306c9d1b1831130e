"""Client API: schedules (activate, list, get, pause, resume, delete)."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from aiki.api import wire_reads
from aiki.api.auth import policy
from aiki.api.deps import NamespaceId, Svc
from aiki.platform.services import schedules as schedule_service
from aiki.worker_sdk import protocol as p


class ScheduleController(Controller):
    path = "/api/v1/schedules"
    tags = ["schedules"]

    @post(
        "/",
        summary="Activate a schedule (idempotent by reference id or definition)",
        status_code=201,
        responses={
            200: ResponseSpec(p.ActivateScheduleResponse, description="The schedule with this identity, already active")
        },
        opt=policy("schedules:write", audit="schedule.activate"),
    )
    async def activate(
        self, data: JSONBody[p.ActivateScheduleRequest], svc: Svc, namespace_id: NamespaceId
    ) -> Response[p.ActivateScheduleResponse]:
        result = await schedule_service.activate_schedule(svc, namespace_id, data)
        return Response(wire_reads.activated_schedule(result), status_code=201 if result.created else 200)

    @get("/", summary="List schedules, newest first", opt=policy("schedules:read"))
    async def list_schedules(
        self,
        svc: Svc,
        namespace_id: NamespaceId,
        workflow: FromQuery[str | None] = None,
        version: FromQuery[str | None] = None,
        status: FromQuery[Literal["active", "paused"] | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> p.ScheduleListResponse:
        page = await schedule_service.list_schedules(
            svc, namespace_id, workflow=workflow, version=version, status=status, cursor=cursor, limit=limit
        )
        return wire_reads.schedule_page(page)

    @get("/{schedule_id:str}", summary="Get a schedule", opt=policy("schedules:read"))
    async def get_schedule(self, schedule_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.ScheduleView:
        return wire_reads.schedule(await schedule_service.get_schedule(svc, namespace_id, schedule_id))

    @post(
        "/{schedule_id:str}/pause",
        summary="Pause a schedule",
        status_code=200,
        opt=policy("schedules:write", audit="schedule.pause"),
    )
    async def pause(self, schedule_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.ScheduleView:
        return wire_reads.schedule(await schedule_service.pause_schedule(svc, namespace_id, schedule_id))

    @post(
        "/{schedule_id:str}/resume",
        summary="Resume a paused schedule",
        status_code=200,
        opt=policy("schedules:write", audit="schedule.resume"),
    )
    async def resume(self, schedule_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.ScheduleView:
        return wire_reads.schedule(await schedule_service.resume_schedule(svc, namespace_id, schedule_id))

    @delete(
        "/{schedule_id:str}",
        summary="Delete a schedule; returns it as it was",
        status_code=200,
        opt=policy("schedules:write", audit="schedule.delete"),
    )
    async def delete_schedule(self, schedule_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.ScheduleView:
        return wire_reads.schedule(await schedule_service.delete_schedule(svc, namespace_id, schedule_id))
