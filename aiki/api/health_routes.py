"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.openapi import ResponseSpec

from aiki.api.auth import policy
from aiki.api.deps import Svc
from aiki.platform.db import migrate


@get("/health", summary="Liveness", tags=["health"], include_in_schema=True, opt=policy("public"))
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/ready",
    summary="Readiness: database reachable and schema at head",
    tags=["health"],
    responses={503: ResponseSpec(dict[str, Any], description="Not ready: the database is unreachable or behind")},
    opt=policy("public"),
)
async def ready(svc: Svc) -> Response[dict[str, Any]]:
    try:
        state = await migrate.status(svc.db)
    except Exception as exc:  # any failure to reach the database means not ready
        return Response(
            {"status": "unavailable", "detail": type(exc).__name__},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    if not state["up_to_date"]:
        return Response({"status": "migrations_pending", **state}, status_code=503, headers={"Retry-After": "5"})
    return Response({"status": "ready", **state})
