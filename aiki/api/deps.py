"""Dependencies every route takes: the core's services and the caller's namespace."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.services.context import Services


def provide_services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def provide_namespace(request: Request[Any, Any, Any]) -> str:
    # Without IAM every caller works in the implicit `default` namespace.
    namespace_id = request.scope.get("aiki_namespace_id", DEFAULT_NAMESPACE_ID)
    return str(namespace_id)


# Route parameters filled by name from the app's dependencies.
Svc = NamedDependency[Services]
NamespaceId = NamedDependency[str]
