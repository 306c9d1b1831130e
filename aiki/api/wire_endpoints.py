"""Push endpoints' domain values (:mod:`aiki.platform.domain.endpoints`) to wire types.

The API's ``/endpoints`` routes and the run deliveries route map through here. The signing secret
appears only in :func:`endpoint_with_secret` (the answer of create and rotate).
"""

from __future__ import annotations

from typing import cast

from aiki.platform.domain.endpoints import DeliveryAttempt, Endpoint, EndpointHealthValue, EndpointSecret
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.protocol.endpoints import BreakerState


def health(h: EndpointHealthValue) -> p.EndpointHealth:
    return p.EndpointHealth(
        breaker=cast(BreakerState, h.breaker),
        consecutive_failures=h.consecutive_failures,
        breaker_until=h.breaker_until,
        last_delivery_at=h.last_delivery_at,
        last_status_code=h.last_status_code,
        last_error=h.last_error,
        deliveries_last_hour=h.deliveries_last_hour,
        failures_last_hour=h.failures_last_hour,
    )


def endpoint(e: Endpoint) -> p.EndpointOut:
    return p.EndpointOut(
        id=e.id,
        url=e.url,
        versions=[p.VersionRef(workflow=w, version=v) for w, v in e.versions],
        pools=list(e.pools),
        concurrency=e.concurrency,
        timeout_ms=e.timeout_ms,
        enabled=e.enabled,
        secret_hint=e.secret_hint,
        created_at=e.created_at,
        updated_at=e.updated_at,
        health=health(e.health),
        previous_secret_expires_at=e.previous_secret_expires_at,
    )


def endpoint_list(items: list[Endpoint]) -> p.EndpointList:
    return p.EndpointList(items=[endpoint(e) for e in items])


def endpoint_with_secret(made: EndpointSecret) -> p.EndpointWithSecret:
    return p.EndpointWithSecret(endpoint=endpoint(made.endpoint), secret=made.secret)


def attempt(a: DeliveryAttempt) -> p.DeliveryAttemptOut:
    return p.DeliveryAttemptOut(
        id=a.id,
        endpoint_id=a.endpoint_id,
        run_id=a.run_id,
        revision=a.revision,
        attempt=a.attempt,
        outcome=a.outcome,
        created_at=a.created_at,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        error=a.error,
    )


def attempt_list(items: list[DeliveryAttempt]) -> p.DeliveryAttemptList:
    return p.DeliveryAttemptList(items=[attempt(a) for a in items])
