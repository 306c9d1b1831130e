"""Push endpoints: the list with health, the register form (the secret shown once, with the mount
code), an endpoint's page with its recent deliveries, enable/disable, rotate the secret, delete.

Admins manage; members and viewers read (no forms shown, and the POST handlers refuse by policy).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath

from aiki.dashboard import endpoint_views as ev
from aiki.dashboard.audit_marks import audit_as, endpoint_facts
from aiki.dashboard.web import (
    PREFIX,
    csrf_context,
    grant_of,
    iam_of,
    is_htmx,
    layout,
    policy,
    principal_of,
    redirect,
    render,
    services_of,
)
from aiki.iam.policy import authorize
from aiki.platform.domain.errors import CoreError
from aiki.platform.services import deliveries, endpoints
from aiki.worker_sdk import error_codes as codes
from aiki.worker_sdk import protocol as p

RECENT_DELIVERIES = 50


def _base(ns_id: str) -> str:
    return f"{PREFIX}/ns/{ns_id}/endpoints"


def _can_manage(request: Request[Any, Any, Any]) -> bool:
    try:
        authorize(principal_of(request), "endpoints:write", grant_of(request))
    except CoreError:
        return False
    return True


def _status_of(exc: CoreError) -> int:
    status = codes.HTTP_STATUS.get(exc.code, 400)
    return status if status in (404, 409, 422) else 422


async def _list_context(request: Request[Any, Any, Any], ns_id: str, **extra: Any) -> dict[str, Any]:
    rows = [ev.endpoint_row(e, _base(ns_id)) for e in await endpoints.list_endpoints(services_of(request), ns_id)]
    return {
        "endpoints": rows,
        "ns_id": ns_id,
        "endpoints_href": _base(ns_id),
        "can_manage": _can_manage(request),
        "form": ev.EndpointForm(),
        **csrf_context(request),
        **extra,
    }


async def _detail_context(
    request: Request[Any, Any, Any], ns_id: str, endpoint_id: str, **extra: Any
) -> dict[str, Any]:
    svc = services_of(request)
    endpoint = await endpoints.get_endpoint(svc, ns_id, endpoint_id)
    attempts = await deliveries.endpoint_deliveries(svc, ns_id, endpoint_id, limit=RECENT_DELIVERIES)
    return {
        **await layout(request, namespace_id=ns_id),
        "e": ev.endpoint_row(endpoint, _base(ns_id)),
        "deliveries": ev.delivery_rows(attempts, _base(ns_id), f"{PREFIX}/ns/{ns_id}/runs"),
        "ns_id": ns_id,
        "endpoints_href": _base(ns_id),
        "can_manage": _can_manage(request),
        **extra,
    }


class EndpointPages(Controller):
    path = "/ns/{ns_id:str}/endpoints"

    @get("/", opt=policy("endpoints:read"))
    async def list_endpoints(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        context = {**await layout(request, namespace_id=ns_id), **await _list_context(request, ns_id)}
        return render(request, "endpoints/list.html", context, partial="endpoints/_panel.html")

    @post("/", opt=policy("endpoints:write", audit="endpoint.create"))
    async def create(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        form = ev.form_values(await request.form())
        extra: dict[str, Any]
        status = 200
        try:
            made = await endpoints.create_endpoint(services_of(request), ns_id, ev.create_request(form))
        except CoreError as exc:
            extra, status = {"error": exc.message, "error_field": exc.field, "form": form}, _status_of(exc)
        else:
            audit_as(request, target_id=made.endpoint.id, detail=endpoint_facts(made.endpoint))
            # The secret is in this response only: it is kept encrypted and never shown again.
            base_url = iam_of(request).config.base_url
            row = ev.endpoint_row(made.endpoint, _base(ns_id))
            extra = {"created": row, "secret": made.secret, "snippet": ev.mount_snippet(base_url, row.versions)}
        context = await _list_context(request, ns_id, **extra)
        if not is_htmx(request):
            context.update(await layout(request, namespace_id=ns_id))
        return render(request, "endpoints/list.html", context, partial="endpoints/_panel.html", status_code=status)

    @get("/{endpoint_id:str}", opt=policy("endpoints:read"))
    async def endpoint_page(
        self, request: Request[Any, Any, Any], ns_id: FromPath[str], endpoint_id: FromPath[str]
    ) -> Any:
        return render(request, "endpoints/detail.html", await _detail_context(request, ns_id, endpoint_id))

    async def _switch(self, request: Request[Any, Any, Any], ns_id: str, endpoint_id: str, *, enabled: bool) -> Any:
        changed = await endpoints.update_endpoint(
            services_of(request), ns_id, endpoint_id, p.EndpointUpdate(enabled=enabled)
        )
        audit_as(request, detail=endpoint_facts(changed))
        form = await request.form()
        back = f"{_base(ns_id)}/{endpoint_id}" if form.get("back") == "detail" else _base(ns_id)
        return redirect(back)

    @post("/{endpoint_id:str}/enable", opt=policy("endpoints:write", audit="endpoint.enable"))
    async def enable(self, request: Request[Any, Any, Any], ns_id: FromPath[str], endpoint_id: FromPath[str]) -> Any:
        return await self._switch(request, ns_id, endpoint_id, enabled=True)

    @post("/{endpoint_id:str}/disable", opt=policy("endpoints:write", audit="endpoint.disable"))
    async def disable(self, request: Request[Any, Any, Any], ns_id: FromPath[str], endpoint_id: FromPath[str]) -> Any:
        return await self._switch(request, ns_id, endpoint_id, enabled=False)

    @post("/{endpoint_id:str}/rotate-secret", opt=policy("endpoints:write", audit="endpoint.rotate_secret"))
    async def rotate_secret(
        self, request: Request[Any, Any, Any], ns_id: FromPath[str], endpoint_id: FromPath[str]
    ) -> Any:
        form = await request.form()
        try:
            grace = ev.grace_ms(form.get("grace_hours"))
            made = await endpoints.rotate_secret(services_of(request), ns_id, endpoint_id, grace)
        except CoreError as exc:
            if codes.HTTP_STATUS.get(exc.code) in (403, 404):
                raise
            context = await _detail_context(request, ns_id, endpoint_id, error=exc.message)
            return render(request, "endpoints/detail.html", context, status_code=_status_of(exc))
        audit_as(request, detail={"grace_ms": grace})
        # The new secret is in this response only.
        context = await _detail_context(request, ns_id, endpoint_id, secret=made.secret)
        return render(request, "endpoints/detail.html", context)

    @post("/{endpoint_id:str}/delete", opt=policy("endpoints:write", audit="endpoint.delete"))
    async def delete(self, request: Request[Any, Any, Any], ns_id: FromPath[str], endpoint_id: FromPath[str]) -> Any:
        await endpoints.delete_endpoint(services_of(request), ns_id, endpoint_id)
        return redirect(_base(ns_id))
