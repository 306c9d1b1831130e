"""The composition root: builds the Litestar app over the core's services."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Reference

from aiki.api.allow_header import list_every_allowed_method
from aiki.api.auth import audit_declared_actions, iam_guard
from aiki.api.deps import provide_grant, provide_iam, provide_namespace, provide_principal, provide_services
from aiki.api.endpoints_routes import EndpointController, RunDeliveriesController
from aiki.api.errors import EXCEPTION_HANDLERS
from aiki.api.health_routes import health, ready
from aiki.api.local_port import local_port_for
from aiki.api.openapi_docs import document_operations
from aiki.api.proxies import TrustedProxies
from aiki.api.query_routes import RunQueryController, WorkerQueryController, WorkflowController
from aiki.api.request_checks import RequestChecks
from aiki.api.response_headers import security_headers
from aiki.api.runs_routes import RunController
from aiki.api.schedules_routes import ScheduleController
from aiki.api.worker_routes import ExecutionController, WorkerController, commands_route
from aiki.iam.context import Iam
from aiki.platform.services.context import Services


def create_app(
    services: Services,
    *,
    iam: Iam | None = None,
    debug: bool = False,
    trusted_proxies: TrustedProxies | None = None,
) -> Litestar:
    """The app. With ``iam`` every route is authenticated and authorized (``aiki.api.auth``).

    Every request passes ``aiki.api.request_checks`` (paths, media types, JSON depth, the client
    address behind ``trusted_proxies``); every response gets ``aiki.api.response_headers``.
    """
    handlers: list[Any] = [
        RunController,
        RunQueryController,
        WorkerController,
        WorkerQueryController,
        WorkflowController,
        ExecutionController,
        commands_route(services),
        ScheduleController,
        EndpointController,
        RunDeliveriesController,
        health,
        ready,
    ]
    if iam is not None:
        from aiki.api.iam_routes import IAM_CONTROLLERS

        handlers += IAM_CONTROLLERS
        # The dashboard is for signed-in people: it is served when IAM is on, on the API's port.
        from aiki.dashboard import dashboard_routers

        handlers += dashboard_routers()
    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "svc": Provide(provide_services, sync_to_thread=False),
            "namespace_id": Provide(provide_namespace, sync_to_thread=False),
            "iam": Provide(provide_iam, sync_to_thread=False),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "grant": Provide(provide_grant, sync_to_thread=False),
        },
        guards=[iam_guard],
        middleware=[DefineMiddleware(RequestChecks, trusted_proxies=trusted_proxies)],
        before_send=[
            audit_declared_actions,
            list_every_allowed_method,
            security_headers(hsts=iam is not None and iam.config.base_url.lower().startswith("https://")),
        ],
        # At startup: building the document costs ~60 ms.
        on_startup=[_document_empty_bodies, document_operations],
        on_shutdown=[iam.aclose] if iam is not None else [],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="Aiki", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]),
        request_max_body_size=services.settings.max_payload_bytes,
        debug=debug,
        template_config=_template_config() if iam is not None else None,
        # An embedded library must not reconfigure the host application's logging.
        logging_config=None,
    )
    app.state.services = services
    app.state.iam = iam
    # The dashboard offers "Log in with SSO" only when a provider is configured.
    app.state.oidc_enabled = iam is not None and iam.config.oidc is not None
    # `client(handler=app)` answers its hot calls through this port (None with IAM on: HTTP only).
    app.state.aiki_local_port = local_port_for(services, iam_enabled=iam is not None)
    return app


def _template_config() -> Any:
    from aiki.dashboard import template_config

    return template_config()


def _document_empty_bodies(app: Litestar) -> None:
    # Litestar documents a handler returning ``Response[None]`` (needed to set a cookie on a 204) as
    # a JSON ``null`` body; a 204 has no body at all, so the document must not promise one.
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method, None)
            response = (operation.responses or {}).get("204") if operation is not None else None
            if response is not None and not isinstance(response, Reference):
                response.content = None
