"""The push endpoint of the `aiki-push` system: the cross-process scenarios' workflows behind the
SDK's ``endpoint(...)`` ASGI app, served by uvicorn in its own process:

    python -m uvicorn bench.systems.push_endpoint_app:build --factory --port PORT

The server's URL, a worker API key and the signing secret come from the environment.
"""

import os
from typing import Any

from aiki import WorkflowVersion, client, endpoint
from bench.systems import remote_workflows_aiki

SERVER_URL_ENV = "BENCH_PUSH_SERVER_URL"
API_KEY_ENV = "BENCH_PUSH_API_KEY"
SECRET_ENV = "BENCH_PUSH_SECRET"
WORKFLOWS: list[WorkflowVersion[Any, Any]] = list(remote_workflows_aiki.WORKFLOWS)  # type: ignore[arg-type]
VERSIONS = [[v.name, v.version] for v in WORKFLOWS]


def build() -> Any:
    """The ASGI app (uvicorn ``--factory``)."""
    return endpoint(
        workflows=WORKFLOWS,
        client=client(url=os.environ[SERVER_URL_ENV], api_key=os.environ[API_KEY_ENV]),
        secret=os.environ[SECRET_ENV],
    )
