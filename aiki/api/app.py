"""The composition root: builds the Litestar app over the core's services."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from aiki.api.deps import provide_namespace, provide_services
from aiki.api.errors import EXCEPTION_HANDLERS
from aiki.api.health_routes import health, ready
from aiki.api.query_routes import RunQueryController, WorkerQueryController, WorkflowController
from aiki.api.runs_routes import RunController
from aiki.api.schedules_routes import ScheduleController
from aiki.api.worker_routes import ExecutionController, WorkerController
from aiki.platform.services.context import Services


def create_app(services: Services, *, debug: bool = False) -> Litestar:
    app = Litestar(
        route_handlers=[
            RunController,
            RunQueryController,
            WorkerController,
            WorkerQueryController,
            WorkflowController,
            ExecutionController,
            health,
            ready,
            ScheduleController,
        ],
        dependencies={
            "svc": Provide(provide_services, sync_to_thread=False),
            "namespace_id": Provide(provide_namespace, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="Aiki", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]),
        request_max_body_size=services.settings.max_payload_bytes,
        debug=debug,
        # An embedded library must not reconfigure the host application's logging.
        logging_config=None,
    )
    app.state.services = services
    return app
