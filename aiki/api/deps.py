"""Dependencies every route takes: the core's services and the caller's namespace."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from aiki.iam.context import Iam
from aiki.iam.policy import Grant, Principal
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.errors import Unauthenticated
from aiki.platform.services.context import Services


def provide_services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def provide_namespace(request: Request[Any, Any, Any]) -> str:
    # Without IAM every caller works in the implicit `default` namespace.
    namespace_id = request.scope.get("aiki_namespace_id", DEFAULT_NAMESPACE_ID)
    return str(namespace_id)


def provide_iam(request: Request[Any, Any, Any]) -> Iam:
    iam: Iam | None = request.app.state.get("iam")
    if iam is None:  # IAM routes are mounted only with IAM on
        raise Unauthenticated("this server runs without IAM")
    return iam


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    # Set by the IAM guard; a route that asks for it declared a non-public action.
    principal: Principal | None = request.scope.get("aiki_principal")  # type: ignore[assignment]
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal


def provide_grant(request: Request[Any, Any, Any]) -> Grant:
    grant: Grant | None = request.scope.get("aiki_grant")  # type: ignore[assignment]
    if grant is None:
        raise Unauthenticated("authentication required")
    return grant


# Route parameters filled by name from the app's dependencies.
Svc = NamedDependency[Services]
NamespaceId = NamedDependency[str]
IamDep = NamedDependency[Iam]
PrincipalDep = NamedDependency[Principal]
GrantDep = NamedDependency[Grant]
