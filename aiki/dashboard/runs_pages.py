"""Runs: the filtered, keyset-paged list (refreshing while runs are live) and the run page with its actions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery

from aiki.dashboard import endpoint_views, views
from aiki.dashboard.web import (
    PREFIX,
    csrf_context,
    grant_of,
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
from aiki.platform.services import deliveries, endpoints, lifecycle, queries
from aiki.platform.services import runs as run_service


def _base(ns_id: str) -> str:
    return f"{PREFIX}/ns/{ns_id}/runs"


def _can_manage(request: Request[Any, Any, Any]) -> bool:
    try:
        authorize(principal_of(request), "runs:manage", grant_of(request))
    except CoreError:
        return False
    return True


async def _detail_context(request: Request[Any, Any, Any], ns_id: str, run_id: str) -> dict[str, Any]:
    svc = services_of(request)
    detail = await queries.run_detail(svc, ns_id, run_id)
    history = await queries.grouped_history(svc, ns_id, run_id)
    vm = views.run_detail(detail, history, _base(ns_id), can_manage=_can_manage(request))
    attempts = await deliveries.run_deliveries(svc, ns_id, run_id)
    urls = {e.id: e.url for e in await endpoints.list_endpoints(svc, ns_id)} if attempts else {}
    return {
        "vm": vm,
        "deliveries": endpoint_views.delivery_rows(attempts, f"{PREFIX}/ns/{ns_id}/endpoints", _base(ns_id), urls),
        "runs_href": _base(ns_id),
        "refresh_seconds": views.REFRESH_SECONDS,
        **csrf_context(request),
    }


async def _after(request: Request[Any, Any, Any], ns_id: str, run_id: str) -> Any:
    """HTMX gets the run's fragment as it is now; a plain form goes back to the run page."""
    if is_htmx(request):
        return render(
            request, "runs/detail.html", await _detail_context(request, ns_id, run_id), partial="runs/_detail.html"
        )
    return redirect(f"{_base(ns_id)}/{run_id}")


class RunPages(Controller):
    path = "/ns/{ns_id:str}/runs"

    @get("/", opt=policy("runs:read"))
    async def list_runs(
        self, request: Request[Any, Any, Any], ns_id: FromPath[str], cursor: FromQuery[str | None] = None
    ) -> Any:
        filters = views.parse_filters(request.query_params)
        listing = await queries.list_runs(
            services_of(request), ns_id, filters.run_filter, cursor=cursor or None, limit=views.PAGE_SIZE
        )
        page = views.runs_page(listing, filters, _base(ns_id), cursor or None)
        context = {
            **await layout(request, namespace_id=ns_id),
            "page": page,
            "runs_href": _base(ns_id),
            "refresh_seconds": views.REFRESH_SECONDS,
            "base_url": request.app.state.iam.config.base_url,
        }
        return render(request, "runs/list.html", context, partial="runs/_table.html")

    @get("/{run_id:str}", opt=policy("runs:read"))
    async def run_page(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        context = await _detail_context(request, ns_id, run_id)
        if is_htmx(request):
            return render(request, "runs/detail.html", context, partial="runs/_detail.html")
        context.update(await layout(request, namespace_id=ns_id))
        return render(request, "runs/detail.html", context)

    @post("/{run_id:str}/cancel", opt=policy("runs:manage", audit="run.cancel"))
    async def cancel(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        form = await request.form()
        if form.get("confirm") != "yes":
            # Without JavaScript there is no confirm dialog: ask on a page of its own.
            context = {**await _detail_context(request, ns_id, run_id), **await layout(request, namespace_id=ns_id)}
            return render(request, "runs/confirm_cancel.html", context)
        reason = f"cancelled in the dashboard by {principal_of(request).label}"
        await run_service.cancel_run(services_of(request), ns_id, run_id, reason)
        return await _after(request, ns_id, run_id)

    async def _act(self, request: Request[Any, Any, Any], ns_id: str, run_id: str, action: str) -> Any:
        reason = f"{action} in the dashboard by {principal_of(request).label}"
        await lifecycle.act(services_of(request), ns_id, run_id, action, reason)
        return await _after(request, ns_id, run_id)

    @post("/{run_id:str}/pause", opt=policy("runs:manage", audit="run.pause"))
    async def pause(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        return await self._act(request, ns_id, run_id, "pause")

    @post("/{run_id:str}/resume", opt=policy("runs:manage", audit="run.resume"))
    async def resume(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        return await self._act(request, ns_id, run_id, "resume")

    @post("/{run_id:str}/wake", opt=policy("runs:manage", audit="run.wake"))
    async def wake(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        return await self._act(request, ns_id, run_id, "wake")

    @post("/{run_id:str}/requeue", opt=policy("runs:manage", audit="run.requeue"))
    async def requeue(self, request: Request[Any, Any, Any], ns_id: FromPath[str], run_id: FromPath[str]) -> Any:
        return await self._act(request, ns_id, run_id, "requeue")
