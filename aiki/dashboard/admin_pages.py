"""Namespaces (create, switch), API keys (create once-shown, list, revoke), workers, schedules."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath

from aiki.dashboard import views
from aiki.dashboard.web import (
    PREFIX,
    after_action,
    client_ip,
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
from aiki.iam import keys, orgs
from aiki.iam.policy import KEY_ROLES, authorize
from aiki.platform.domain.errors import CoreError
from aiki.platform.services import queries
from aiki.platform.services import schedules as schedule_service


class NamespacePages(Controller):
    path = "/"

    @get("/namespaces", opt=policy("user"))
    async def namespaces(self, request: Request[Any, Any, Any]) -> Any:
        return render(request, "namespaces/list.html", await layout(request))

    @post("/orgs/{org_id:str}/namespaces", opt=policy("org:manage"))
    async def create_namespace(self, request: Request[Any, Any, Any], org_id: FromPath[str]) -> Any:
        form = await request.form()
        name = str(form.get("name") or "").strip()
        try:
            ns = await orgs.create_namespace(
                iam_of(request), principal_of(request), grant_of(request), name, client_ip(request)
            )
        except CoreError as exc:
            context = {**await layout(request, organization_id=org_id), "error": exc.message, "error_org": org_id}
            return render(
                request, "namespaces/list.html", context, status_code=422 if exc.code != "already_exists" else 409
            )
        return after_action(request, f"{PREFIX}/ns/{ns.id}/runs")

    @post("/ns/{ns_id:str}/delete", opt=policy("namespace:manage"))
    async def delete_namespace(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        await orgs.delete_namespace(iam_of(request), principal_of(request), grant_of(request), client_ip(request))
        return redirect(f"{PREFIX}/namespaces")


async def _keys_context(request: Request[Any, Any, Any], ns_id: str, **extra: Any) -> dict[str, Any]:
    iam = iam_of(request)
    rows = views.key_rows(await keys.list_keys(iam, ns_id), iam.now())
    return {"keys": rows, "roles": KEY_ROLES, "ns_id": ns_id, **csrf_context(request), **extra}


class KeyPages(Controller):
    path = "/ns/{ns_id:str}/keys"

    @get("/", opt=policy("keys:read"))
    async def list_keys(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        context = {**await layout(request, namespace_id=ns_id), **await _keys_context(request, ns_id)}
        return render(request, "keys/list.html", context, partial="keys/_panel.html")

    @post("/", opt=policy("keys:manage"))
    async def create_key(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        form = await request.form()
        iam = iam_of(request)
        name = str(form.get("name") or "").strip()
        role = str(form.get("role") or "")
        extra: dict[str, Any] = {}
        status = 200
        try:
            created = await keys.create_key(
                iam,
                principal_of(request),
                ns_id,
                name=name,
                role=role,
                expires_at=views.expiry_ms(str(form.get("expires_in_days") or ""), iam.now()),
                organization_id=grant_of(request).organization_id,
                ip=client_ip(request),
            )
        except CoreError as exc:
            extra = {"error": exc.message, "form": {"name": name, "role": role}}
            status = 422
        else:
            # The secret is in this response only: it is stored as an HMAC and never shown again.
            extra = {"created": created, "worker_command": views.worker_command(iam.config.base_url, created.key)}
        context = await _keys_context(request, ns_id, **extra)
        if not is_htmx(request):
            context.update(await layout(request, namespace_id=ns_id))
        return render(request, "keys/list.html", context, partial="keys/_panel.html", status_code=status)

    @post("/{key_id:str}/revoke", opt=policy("keys:manage"))
    async def revoke_key(self, request: Request[Any, Any, Any], ns_id: FromPath[str], key_id: FromPath[str]) -> Any:
        await keys.revoke_key(iam_of(request), principal_of(request), grant_of(request), key_id, client_ip(request))
        if is_htmx(request):
            return render(request, "keys/list.html", await _keys_context(request, ns_id), partial="keys/_panel.html")
        return redirect(f"{PREFIX}/ns/{ns_id}/keys")


class WorkerPages(Controller):
    path = "/ns/{ns_id:str}/workers"

    @get("/", opt=policy("workers:read"))
    async def list_workers(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        workers = await queries.list_workers(services_of(request), ns_id)
        context = {
            **await layout(request, namespace_id=ns_id),
            "workers": workers,
            "base_url": iam_of(request).config.base_url,
        }
        return render(request, "workers/list.html", context)


class SchedulePages(Controller):
    path = "/ns/{ns_id:str}/schedules"

    @get("/", opt=policy("schedules:read"))
    async def list_schedules(self, request: Request[Any, Any, Any], ns_id: FromPath[str]) -> Any:
        listing = await schedule_service.list_schedules(services_of(request), ns_id, limit=200)
        context = {
            **await layout(request, namespace_id=ns_id),
            "schedules": listing.items,
            "truncated": listing.next_cursor is not None,
            "can_write": _can(request, "schedules:write"),
            "ns_id": ns_id,
        }
        return render(request, "schedules/list.html", context)

    @post("/{schedule_id:str}/pause", opt=policy("schedules:write", audit="schedule.pause"))
    async def pause(self, request: Request[Any, Any, Any], ns_id: FromPath[str], schedule_id: FromPath[str]) -> Any:
        await schedule_service.pause_schedule(services_of(request), ns_id, schedule_id)
        return after_action(request, f"{PREFIX}/ns/{ns_id}/schedules")

    @post("/{schedule_id:str}/resume", opt=policy("schedules:write", audit="schedule.resume"))
    async def resume(self, request: Request[Any, Any, Any], ns_id: FromPath[str], schedule_id: FromPath[str]) -> Any:
        await schedule_service.resume_schedule(services_of(request), ns_id, schedule_id)
        return after_action(request, f"{PREFIX}/ns/{ns_id}/schedules")

    @post("/{schedule_id:str}/delete", opt=policy("schedules:write", audit="schedule.delete"))
    async def delete(self, request: Request[Any, Any, Any], ns_id: FromPath[str], schedule_id: FromPath[str]) -> Any:
        await schedule_service.delete_schedule(services_of(request), ns_id, schedule_id)
        return after_action(request, f"{PREFIX}/ns/{ns_id}/schedules")


def _can(request: Request[Any, Any, Any], action: str) -> bool:
    try:
        authorize(principal_of(request), action, grant_of(request))
    except CoreError:
        return False
    return True
