"""The body of a push delivery: a domain activation as the protocol's ``Delivery`` JSON.

The activation inside is mapped by ``aiki.platform.activation_wire``, as a claim's answer is, so a
worker and an endpoint receive the same JSON for it; this returns the encoded bytes (a service
answers domain values, never wire types).
"""

from __future__ import annotations

import msgspec

from aiki.platform.activation_wire import activation as wire_activation
from aiki.platform.domain import values as v
from aiki.worker_sdk import protocol as p

_encoder = msgspec.json.Encoder()


BATCH_BODY_FACTOR = 8
"""A ``POST /workers/commands`` body may be this many times ``max_payload_bytes`` (the API's limit,
``aiki.api.worker_routes``, told to workers at registration and to endpoints in each delivery)."""


def encode_delivery(
    endpoint_id: str,
    attempt: int,
    time_limit_ms: int,
    a: v.Activation,
    payload_max_bytes: int | None = None,
) -> bytes:
    """The JSON body POSTed to an endpoint for ``a`` (attempt ``attempt`` of this activation), with
    the server's request limits when ``payload_max_bytes`` is given (as a worker learns them)."""
    activation = wire_activation(a)
    delivery = p.Delivery(
        type="activation",
        endpoint_id=endpoint_id,
        attempt=attempt,
        time_limit_ms=time_limit_ms,
        activation=activation,
        payload_max_bytes=payload_max_bytes,
        batch_max_bytes=None if payload_max_bytes is None else payload_max_bytes * BATCH_BODY_FACTOR,
    )
    return _encoder.encode(delivery)
