"""Push endpoints on the wire: what the server POSTs to an endpoint, what it answers, and the
``/api/v1/endpoints`` management types.

A push delivery is one activation of a run, signed the Standard Webhooks way (``webhooks.py``).
The endpoint executes it with the same replay engine a worker uses, records through the worker
protocol (``POST /workers/commands``) fenced by ``activation.revision``, and answers a
:class:`DeliveryAnswer`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from aiki.worker_sdk.protocol.workers import Activation, VersionRef

DeliveryOutcome = Literal["completed", "failed", "suspended", "handed_back", "superseded"]
"""What an activation came to, as the endpoint answers it.

- ``completed`` / ``failed``: the run reached that terminal status (recorded).
- ``suspended``: the run is waiting (sleep, event, child, task retry, pause) and was released (recorded).
- ``handed_back``: the activation reached the endpoint's time limit first; what it finished is
  recorded, the rest is not, and the server puts the run back to be delivered again.
- ``superseded``: the run's revision moved on while it executed (cancelled, recovered): nothing
  more was recorded by it.
"""

BreakerState = Literal["closed", "open", "half_open"]


class Delivery(msgspec.Struct, omit_defaults=True):
    """The body of a push delivery: one activation of one run, to execute within ``time_limit_ms``."""

    type: Literal["activation"]
    endpoint_id: str
    attempt: int
    """The delivery attempt of this activation, from 1 (retries after 5xx, timeouts, connection errors)."""
    time_limit_ms: int
    """How long the endpoint may execute before it hands the run back (the server waits a little
    longer than this for the answer)."""
    activation: Activation
    payload_max_bytes: int | None = None
    """The server's request size limit, as a worker learns it when it registers: with it the
    endpoint may send a finished task's record together with its next write (one round trip)."""
    batch_max_bytes: int | None = None
    """The largest ``POST /workers/commands`` body the server takes (the endpoint's writes of
    concurrent deliveries travel in shared batches of at most this size)."""


class DeliveryAnswer(msgspec.Struct, omit_defaults=True):
    """An endpoint's 200 answer to a delivery."""

    outcome: DeliveryOutcome
    run_id: str
    revision: int


# -- /api/v1/endpoints -------------------------------------------------------------------------


class EndpointCreate(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """``POST /endpoints``: register a push target for some workflow versions of the namespace."""

    url: str
    versions: list[VersionRef]
    pools: list[str] = msgspec.field(default_factory=list)
    """The pools it serves (none: the default pool only), as a worker's ``pools``."""
    concurrency: int = 10
    """The most activations in flight to it at once, across all server replicas."""
    timeout_ms: int = 30_000
    """How long one delivery may take (the endpoint's own time limit is a little shorter)."""
    enabled: bool = True


class EndpointUpdate(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """``PATCH /endpoints/{id}``: change what is given, keep the rest."""

    url: str | None = None
    versions: list[VersionRef] | None = None
    pools: list[str] | None = None
    concurrency: int | None = None
    timeout_ms: int | None = None
    enabled: bool | None = None


class EndpointRotate(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """``POST /endpoints/{id}/rotate-secret``: a new signing secret; the old one stays valid for
    ``grace_ms`` (deliveries carry both signatures meanwhile)."""

    grace_ms: int = 24 * 3600 * 1000


class EndpointHealth(msgspec.Struct, omit_defaults=True):
    """How deliveries to an endpoint are going."""

    breaker: BreakerState
    consecutive_failures: int
    breaker_until: int | None = None
    """While ``open``: when one probe delivery is tried (``half_open``)."""
    last_delivery_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    deliveries_last_hour: int = 0
    failures_last_hour: int = 0


class EndpointOut(msgspec.Struct, omit_defaults=True):
    id: str
    url: str
    versions: list[VersionRef]
    pools: list[str]
    concurrency: int
    timeout_ms: int
    enabled: bool
    secret_hint: str
    """The signing secret's first characters (``whsec_ab12…``), to tell secrets apart; never the secret."""
    created_at: int
    updated_at: int
    health: EndpointHealth
    previous_secret_expires_at: int | None = None
    """While a rotation's grace period lasts: when the previous secret stops being signed with."""


class EndpointWithSecret(msgspec.Struct):
    """The answer of create and rotate: the only time the signing secret is shown."""

    endpoint: EndpointOut
    secret: str


class EndpointList(msgspec.Struct):
    items: list[EndpointOut]


class DeliveryAttemptOut(msgspec.Struct, omit_defaults=True):
    """One POST to an endpoint: ``outcome`` is the endpoint's answer, or why there was none."""

    id: int
    endpoint_id: str
    run_id: str
    revision: int
    attempt: int
    outcome: str
    """A :data:`DeliveryOutcome`, or ``http_error`` (a non-2xx answer), ``timeout``, ``connection_error``,
    ``refused`` (the URL resolved to a refused address), ``bad_answer``."""
    created_at: int
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None


class DeliveryAttemptList(msgspec.Struct):
    items: list[DeliveryAttemptOut]
