"""Read-side API: run lists with filters, run detail, bulk cancel, workers, the workflow catalogue."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from aiki.api import wire_reads
from aiki.api.auth import policy
from aiki.api.deps import NamespaceId, Svc
from aiki.platform.domain.queries import RunFilter, check_time_range, parse_statuses, parse_time
from aiki.platform.services import queries
from aiki.worker_sdk import protocol as p


def run_filter(
    *,
    status: list[str] | None,
    workflow: str | None,
    version: str | None,
    reference_id: str | None,
    schedule_id: str | None,
    parent_run_id: str | None,
    pool: str | None,
    created_after: str | int | None,
    created_before: str | int | None,
) -> RunFilter:
    """The filter the list and the bulk cancel share; bad values raise errors naming the parameter."""
    after = parse_time(created_after, "created_after")
    before = parse_time(created_before, "created_before")
    check_time_range(after, before)
    return RunFilter(
        statuses=parse_statuses(status),
        workflow=workflow,
        version=version,
        reference_id=reference_id,
        schedule_id=schedule_id,
        parent_run_id=parent_run_id,
        pool=pool,
        created_after=after,
        created_before=before,
    )


class RunQueryController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]

    @get("/{run_id:str}/detail", summary="A run with its tasks, events, sleeps and children", opt=policy("runs:read"))
    async def detail(self, run_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.RunDetail:
        return wire_reads.run_detail(await queries.run_detail(svc, namespace_id, run_id))

    @post(
        "/cancel",
        summary="Cancel every live run matching the filters",
        status_code=200,
        opt=policy("runs:manage", audit="run.bulk_cancel"),
    )
    async def cancel_matching(
        self, data: JSONBody[p.CancelRunsRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.CancelRunsResponse:
        f = run_filter(
            status=list(data.status),
            workflow=data.workflow,
            version=data.version,
            reference_id=data.reference_id,
            schedule_id=data.schedule_id,
            parent_run_id=data.parent_run_id,
            pool=data.pool,
            created_after=data.created_after,
            created_before=data.created_before,
        )
        return wire_reads.cancelled_runs(await queries.cancel_runs(svc, namespace_id, f, data.reason, data.limit))


class WorkerQueryController(Controller):
    path = "/api/v1/workers"
    tags = ["workers"]

    @get(
        "/",
        summary="Workers that registered, with their versions, pools, load and liveness",
        opt=policy("workers:read"),
    )
    async def list_workers(self, svc: Svc, namespace_id: NamespaceId) -> p.WorkerListResponse:
        return wire_reads.workers(await queries.list_workers(svc, namespace_id))


class WorkflowController(Controller):
    path = "/api/v1/workflows"
    tags = ["workflows"]

    @get("/", summary="Workflows with their versions and run counts by status", opt=policy("workflows:read"))
    async def list_workflows(self, svc: Svc, namespace_id: NamespaceId) -> p.WorkflowListResponse:
        return wire_reads.workflows(await queries.list_workflows(svc, namespace_id))
