"""A claimed activation on the wire: the one mapping of the domain's ``Activation`` (and its
records) to the protocol's, shared by the API (a claim's answer, ``aiki.api.wire``) and the push
runtime (a delivery's body, ``services/delivery_body.py``), so a worker and an endpoint receive the
same JSON for the same activation.

It lives beside the core's services rather than in ``aiki.api`` because the core, which may not
import the web layer, sends it too (a push delivery); it is not a service (it answers wire types).
"""

from __future__ import annotations

import msgspec

from aiki.platform.domain import values as v
from aiki.worker_sdk import protocol as p

_NULL = msgspec.Raw(b"null")
_retry_decoder = msgspec.json.Decoder(p.RetryPolicyWire)


def payload(text: str | None) -> msgspec.Raw:
    """A stored JSON payload as it travels (None: JSON ``null``)."""
    return _NULL if text is None else msgspec.Raw(text.encode())


def error(f: v.Failure | None) -> p.ErrorInfo | None:
    if f is None:
        return None
    return p.ErrorInfo(type=f.type, message=f.message, code=f.code, traceback=f.traceback, cause=f.cause)


def task_record(t: v.TaskEntry) -> p.TaskRecord:
    return p.TaskRecord(
        address=t.address,
        seq=t.seq,
        name=t.name,
        status=t.status,  # type: ignore[arg-type]
        attempts=t.attempts,
        output=payload(t.output),
        error=error(t.error),
        next_attempt_at=t.next_attempt_at,
    )


def event_record(e: v.EventEntry) -> p.EventRecord:
    return p.EventRecord(
        id=e.id, name=e.name, seq=e.seq, data=msgspec.Raw(e.data.encode()), reference_id=e.reference_id
    )


def child_record(c: v.ChildEntry) -> p.ChildRecord:
    return p.ChildRecord(
        address=c.address,
        seq=c.seq,
        run_id=c.run_id,
        workflow=c.workflow,
        version=c.version,
        status=c.status,  # type: ignore[arg-type]
        output=payload(c.output),
        error=error(c.error),
    )


def activation(a: v.Activation) -> p.Activation:
    wait = a.resumed_wait
    return p.Activation(
        run_id=a.run_id,
        revision=a.revision,
        workflow=a.workflow,
        version=a.version,
        attempt=a.attempt,
        input=msgspec.Raw(a.input.encode()),
        lease_ttl_ms=a.lease_ttl_ms,
        tasks=[task_record(t) for t in a.tasks],
        events=[event_record(e) for e in a.events],
        sleeps=[p.SleepRecord(name=s.name, seq=s.seq, status=s.status, wake_at=s.wake_at) for s in a.sleeps],  # type: ignore[arg-type]
        wait_timeouts=[p.WaitTimeoutRecord(name=w.name, seq=w.seq) for w in a.wait_timeouts],
        retry=None if a.retry is None else _retry_decoder.decode(a.retry),
        reference_id=a.reference_id,
        children=[child_record(c) for c in a.children],
        deadline_at=a.deadline_at,
        resumed_wait=None if wait is None else p.WaitRef(name=wait.name, seq=wait.seq),
    )
