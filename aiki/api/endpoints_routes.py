"""Client API: push endpoints (register, list, get, change, rotate the signing secret, delete) and
their deliveries, and the deliveries of a run.

The signing secret is in the answers of create and rotate only. Every change is audited (without
the secret, and with the URL's query string left out: it may carry a token).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from aiki.api import wire_endpoints as we
from aiki.api.auth import policy
from aiki.api.deps import NamespaceId, Svc
from aiki.dashboard.audit_marks import audit_as, endpoint_facts
from aiki.platform.services import deliveries, endpoints
from aiki.worker_sdk import protocol as p


def update_action(data: p.EndpointUpdate) -> str:
    """The audit action of a PATCH: enabling and disabling are actions of their own."""
    if data.enabled is None:
        return "endpoint.update"
    return "endpoint.enable" if data.enabled else "endpoint.disable"


def changed_fields(data: p.EndpointUpdate) -> list[str]:
    return [f for f in data.__struct_fields__ if getattr(data, f) is not None]


class EndpointController(Controller):
    path = "/api/v1/endpoints"
    tags = ["endpoints"]

    @post(
        "/",
        summary="Register a push endpoint; the answer shows its signing secret, once",
        status_code=201,
        opt=policy("endpoints:write", audit="endpoint.create"),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: JSONBody[p.EndpointCreate], svc: Svc, namespace_id: NamespaceId
    ) -> p.EndpointWithSecret:
        made = await endpoints.create_endpoint(svc, namespace_id, data)
        audit_as(request, target_id=made.endpoint.id, detail=endpoint_facts(made.endpoint))
        return we.endpoint_with_secret(made)

    @get("/", summary="The namespace's push endpoints, with their delivery health", opt=policy("endpoints:read"))
    async def list_endpoints(self, svc: Svc, namespace_id: NamespaceId) -> p.EndpointList:
        return we.endpoint_list(await endpoints.list_endpoints(svc, namespace_id))

    @get("/{endpoint_id:str}", summary="A push endpoint (never its secret)", opt=policy("endpoints:read"))
    async def get_endpoint(self, endpoint_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.EndpointOut:
        return we.endpoint(await endpoints.get_endpoint(svc, namespace_id, endpoint_id))

    @patch(
        "/{endpoint_id:str}",
        summary="Change a push endpoint (what is given); enabling and disabling are audited as such",
        opt=policy("endpoints:write", audit="endpoint.update"),
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        endpoint_id: FromPath[str],
        data: JSONBody[p.EndpointUpdate],
        svc: Svc,
        namespace_id: NamespaceId,
    ) -> p.EndpointOut:
        audit_as(request, action=update_action(data), detail={"changed": changed_fields(data)})
        updated = await endpoints.update_endpoint(svc, namespace_id, endpoint_id, data)
        audit_as(request, detail=endpoint_facts(updated))
        return we.endpoint(updated)

    @delete(
        "/{endpoint_id:str}",
        summary="Delete a push endpoint (its runs go back to the queue)",
        status_code=204,
        opt=policy("endpoints:write", audit="endpoint.delete"),
    )
    async def delete_endpoint(self, endpoint_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> None:
        await endpoints.delete_endpoint(svc, namespace_id, endpoint_id)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        summary="A new signing secret, shown once; the previous one stays valid for grace_ms",
        status_code=200,
        opt=policy("endpoints:write", audit="endpoint.rotate_secret"),
    )
    async def rotate_secret(
        self,
        request: Request[Any, Any, Any],
        endpoint_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        data: JSONBody[p.EndpointRotate | None] = None,
    ) -> p.EndpointWithSecret:
        grace_ms = (data or p.EndpointRotate()).grace_ms
        audit_as(request, detail={"grace_ms": grace_ms})
        return we.endpoint_with_secret(await endpoints.rotate_secret(svc, namespace_id, endpoint_id, grace_ms))

    @get(
        "/{endpoint_id:str}/deliveries",
        summary="The endpoint's latest delivery attempts, newest first",
        opt=policy("endpoints:read"),
    )
    async def endpoint_deliveries(
        self,
        endpoint_id: FromPath[str],
        svc: Svc,
        namespace_id: NamespaceId,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> p.DeliveryAttemptList:
        await endpoints.get_endpoint(svc, namespace_id, endpoint_id)  # another namespace's id: 404, not []
        return we.attempt_list(await deliveries.endpoint_deliveries(svc, namespace_id, endpoint_id, limit=limit))


class RunDeliveriesController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]

    @get(
        "/{run_id:str}/deliveries",
        summary="The push deliveries of a run: attempt, outcome, status code, latency, error",
        opt=policy("endpoints:read"),
    )
    async def run_deliveries(self, run_id: FromPath[str], svc: Svc, namespace_id: NamespaceId) -> p.DeliveryAttemptList:
        return we.attempt_list(await deliveries.run_deliveries(svc, namespace_id, run_id))
