"""Push endpoints as the core sees them: what a namespace registered and how deliveries to it go.

Frozen values the endpoint services return (``aiki.api`` maps them to the wire, the dashboard
reads them). The signing secret never appears in them: it is shown once, by the service that made
it, and kept encrypted.
"""

from __future__ import annotations

import msgspec


class EndpointHealthValue(msgspec.Struct, frozen=True):
    """The circuit breaker and recent deliveries of an endpoint."""

    breaker: str
    """``closed`` (delivering), ``open`` (not delivering until ``breaker_until``), ``half_open``
    (one probe delivery decides)."""
    consecutive_failures: int
    breaker_until: int | None
    last_delivery_at: int | None
    last_status_code: int | None
    last_error: str | None
    deliveries_last_hour: int
    failures_last_hour: int


class Endpoint(msgspec.Struct, frozen=True):
    """A registered push target of one namespace."""

    id: str
    namespace_id: str
    url: str
    versions: tuple[tuple[str, str], ...]
    """``(workflow, version)`` pairs it serves."""
    pools: tuple[str, ...]
    concurrency: int
    timeout_ms: int
    enabled: bool
    secret_hint: str
    created_at: int
    updated_at: int
    previous_secret_expires_at: int | None
    health: EndpointHealthValue


class EndpointSecret(msgspec.Struct, frozen=True):
    """An endpoint with its new signing secret: the answer of create and rotate, shown once."""

    endpoint: Endpoint
    secret: str


class DeliveryAttempt(msgspec.Struct, frozen=True):
    """One POST of an activation to an endpoint, and what came of it."""

    id: int
    endpoint_id: str
    run_id: str
    revision: int
    attempt: int
    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None
    created_at: int
