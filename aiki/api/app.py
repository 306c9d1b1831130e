"""The composition root: builds the Litestar app over the core's services."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from aiki.api.auth import audit_declared_actions, iam_guard
from aiki.api.deps import provide_grant, provide_iam, provide_namespace, provide_principal, provide_services
from aiki.api.errors import EXCEPTION_HANDLERS
from aiki.api.health_routes import health, ready
from aiki.api.local_port import local_port_for
from aiki.api.query_routes import RunQueryController, WorkerQueryController, WorkflowController
from aiki.api.runs_routes import RunController
from aiki.api.schedules_routes import ScheduleController
from aiki.api.worker_routes import ExecutionController, WorkerController
from aiki.iam.context import Iam
from aiki.platform.services.context import Services


def create_app(services: Services, *, iam: Iam | None = None, debug: bool = False) -> Litestar:
    """The app. With ``iam`` every route is authenticated and authorized (``aiki.api.auth``)."""
    handlers: list[Any] = [
        RunController,
        RunQueryController,
        WorkerController,
        WorkerQueryController,
        WorkflowController,
        ExecutionController,
        ScheduleController,
        health,
        ready,
    ]
    if iam is not None:
        from aiki.api.iam_routes import IAM_CONTROLLERS

        handlers += IAM_CONTROLLERS
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
        before_send=[audit_declared_actions],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="Aiki", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]),
        request_max_body_size=services.settings.max_payload_bytes,
        debug=debug,
        # An embedded library must not reconfigure the host application's logging.
        logging_config=None,
    )
    app.state.services = services
    app.state.iam = iam
    # `client(handler=app)` answers its hot calls through this port (None with IAM on: HTTP only).
    app.state.aiki_local_port = local_port_for(services, iam_enabled=iam is not None)
    return app
