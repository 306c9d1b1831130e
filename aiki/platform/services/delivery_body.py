"""The body of a push delivery: a domain activation as the protocol's ``Delivery`` JSON.

The API maps a claimed activation to the wire in ``aiki.api.wire.activation``; the core may not
import the web layer, so the same mapping is written here, straight into the encoded bytes (a
service answers domain values, never wire types: nothing here returns one).
``tests/unit/test_push_domain.py`` checks both mappings give the same activation.
"""

from __future__ import annotations

import msgspec

from aiki.platform.domain import values as v
from aiki.worker_sdk import protocol as p

_NULL = msgspec.Raw(b"null")
_retry_decoder = msgspec.json.Decoder(p.RetryPolicyWire)
_encoder = msgspec.json.Encoder()


BATCH_BODY_FACTOR = 8
"""A ``POST /workers/commands`` body may be this many times ``max_payload_bytes`` (as
``aiki.api.worker_routes.BATCH_BODY_FACTOR``; a unit test keeps them equal)."""


def encode_delivery(
    endpoint_id: str,
    attempt: int,
    time_limit_ms: int,
    a: v.Activation,
    payload_max_bytes: int | None = None,
) -> bytes:
    """The JSON body POSTed to an endpoint for ``a`` (attempt ``attempt`` of this activation), with
    the server's request limits when ``payload_max_bytes`` is given (as a worker learns them)."""

    def raw(text: str | None) -> msgspec.Raw:
        return _NULL if text is None else msgspec.Raw(text.encode())

    def err(f: v.Failure | None) -> p.ErrorInfo | None:
        if f is None:
            return None
        return p.ErrorInfo(type=f.type, message=f.message, code=f.code, traceback=f.traceback, cause=f.cause)

    wait = a.resumed_wait
    activation = p.Activation(
        run_id=a.run_id,
        revision=a.revision,
        workflow=a.workflow,
        version=a.version,
        attempt=a.attempt,
        input=msgspec.Raw(a.input.encode()),
        lease_ttl_ms=a.lease_ttl_ms,
        tasks=[
            p.TaskRecord(
                address=t.address,
                seq=t.seq,
                name=t.name,
                status=t.status,  # type: ignore[arg-type]
                attempts=t.attempts,
                output=raw(t.output),
                error=err(t.error),
                next_attempt_at=t.next_attempt_at,
            )
            for t in a.tasks
        ],
        events=[
            p.EventRecord(id=e.id, name=e.name, seq=e.seq, data=raw(e.data), reference_id=e.reference_id)
            for e in a.events
        ],
        sleeps=[p.SleepRecord(name=s.name, seq=s.seq, status=s.status, wake_at=s.wake_at) for s in a.sleeps],  # type: ignore[arg-type]
        wait_timeouts=[p.WaitTimeoutRecord(name=w.name, seq=w.seq) for w in a.wait_timeouts],
        retry=None if a.retry is None else _retry_decoder.decode(a.retry),
        reference_id=a.reference_id,
        children=[
            p.ChildRecord(
                address=c.address,
                seq=c.seq,
                run_id=c.run_id,
                workflow=c.workflow,
                version=c.version,
                status=c.status,  # type: ignore[arg-type]
                output=raw(c.output),
                error=err(c.error),
            )
            for c in a.children
        ],
        deadline_at=a.deadline_at,
        resumed_wait=None if wait is None else p.WaitRef(name=wait.name, seq=wait.seq),
    )
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
