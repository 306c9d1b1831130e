"""Push endpoints: runs executed by a serverless function (or any web app) the server POSTs to.

A worker pulls: it claims runs and keeps a connection open. A push endpoint is the other way
round, for platforms that run code only while a request lasts (AWS Lambda, Cloud Run, Vercel, ...):
the Aiki server delivers each ready run of the endpoint's workflow versions as a signed HTTP
``POST``, and :func:`endpoint` is the ASGI app that receives it. It

1. verifies the delivery (Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and
   ``webhook-signature``, HMAC-SHA256 under the endpoint's signing secret, a timestamp within five
   minutes, a ``webhook-id`` accepted once);
2. executes one activation of the run with the same replay engine a worker uses, recording each
   task and the outcome through the Aiki API with its ``client``;
3. answers ``200`` with what the activation came to: ``completed``, ``failed``, ``suspended`` (a
   sleep, an event or child wait, a task retry wait: the run is released, never held, and is
   delivered again when it is ready), ``superseded`` (the run was cancelled or recovered
   meanwhile) or ``handed_back`` (the time limit came first: what finished is recorded, and the
   server delivers the run again to go on from there).

Any other answer makes the server retry the delivery later, with backoff: ``401`` (signature,
timestamp or replay), ``400`` (not a delivery), ``404`` (a version or run this endpoint does not
know), ``405`` (not a POST), ``413`` (too large), ``503`` (the Aiki server could not be reached to
record), ``502`` (it refused a write).

Deliveries are independent: one app executes many at once, each by its own execution, and writes
through its client's connection (shared batches, as a worker's executions do). The ids of accepted
deliveries are remembered in memory by each process, as long as their signatures are fresh: a
function platform running many instances refuses a replay in the instance that saw the original;
the five-minute window and the run's revision (every write is fenced by it) bound what a replay
elsewhere could do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import msgspec

from aiki.worker_sdk._endpoint_asgi import (
    BodyTooLarge,
    Disconnected,
    Receive,
    ReplayGuard,
    Scope,
    Send,
    headers_of,
    lifespan,
    read_body,
    refuse_websocket,
    respond,
)
from aiki.worker_sdk._endpoint_execution import Reply, execute
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.protocol import Delivery, DeliveryAnswer
from aiki.worker_sdk.protocol.webhooks import TOLERANCE_S, WebhookVerificationError, secret_key, verify

log = logging.getLogger("aiki.endpoint")

MAX_BODY_BYTES = 10 * 1024 * 1024
"""The largest delivery body an endpoint reads (a larger one is answered ``413``)."""

_decoder = msgspec.json.Decoder(Delivery)


class Endpoint:
    """A push endpoint: the ASGI app :func:`endpoint` builds. Mount it, or serve it as it is.

    Deliveries are independent: many may be executed at once, each by its own execution.

    Attributes:
        versions: The workflow versions it executes, by ``(name, version)``.
        client: The client it records through.
        time_limit: Its own time limit on an activation, if any (the delivery's applies as well:
            the shorter one rules).
        max_body_bytes: The largest delivery body it reads.
    """

    def __init__(
        self,
        workflows: Sequence[WorkflowVersion[Any, Any]],
        client: Client,
        secret: str | Sequence[str],
        time_limit: timedelta | None = None,
    ) -> None:
        """Check and keep the definition; use :func:`endpoint` rather than this constructor.

        Raises:
            ValueError: No workflow version, one listed twice, a bad signing secret or a
                non-positive ``time_limit``.
            TypeError: ``client`` is not an Aiki client, or a workflow not a workflow version.
        """
        if not workflows:
            raise ValueError("workflows: name at least one workflow version")
        self.versions: dict[tuple[str, str], WorkflowVersion[Any, Any]] = {}
        for version in workflows:
            if not isinstance(version, WorkflowVersion):
                raise TypeError(f"workflows: {version!r} is not a workflow version (decorate it with .v(...))")
            key = (version.name, version.version)
            if key in self.versions:
                raise ValueError(f"workflows: {version.name}@{version.version} is listed twice")
            self.versions[key] = version
        if not isinstance(client, Client):
            raise TypeError("client: pass an Aiki client, aiki.client(url=..., api_key=...)")
        self.client = client
        self._secrets = _check_secrets(secret)
        if time_limit is not None and time_limit <= timedelta(0):
            raise ValueError(f"time_limit must be positive, got {time_limit}")
        self.time_limit = time_limit
        self.max_body_bytes = MAX_BODY_BYTES
        self._replays = ReplayGuard()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application: HTTP requests are deliveries; lifespan events are answered."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)
        elif kind == "websocket":
            await refuse_websocket(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            await respond(send, 405, {"error": "a push endpoint takes POST requests only"}, [("allow", "POST")])
            return
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
        except BodyTooLarge:
            await respond(send, 413, {"error": f"the body is larger than {self.max_body_bytes} bytes"})
            return
        except Disconnected:
            return
        try:
            reply = await self._deliver(headers_of(scope), body)
        except Exception as e:  # a bug: answered as JSON all the same, the server retries later
            log.exception("a delivery failed")
            reply = Reply(500, {"error": f"the endpoint failed: {type(e).__name__}"})
        await respond(send, reply.status, reply.body)

    async def _deliver(self, headers: dict[str, str], body: bytes) -> Reply:
        """Verify and execute one delivery (headers by lower-case name): the status and JSON body to answer."""
        accepted = self._accept(headers, body)
        if isinstance(accepted, Reply):
            return accepted
        msg_id, delivery = accepted
        activation = delivery.activation
        version = self.versions.get((activation.workflow, activation.version))
        if version is None:
            log.warning("delivery %s: %s@%s is not served here", msg_id, activation.workflow, activation.version)
            return Reply(404, {"error": f"{activation.workflow}@{activation.version} is not served by this endpoint"})
        limit_s = delivery.time_limit_ms / 1000
        if self.time_limit is not None:
            limit_s = min(limit_s, self.time_limit.total_seconds())
        connection = connect(self.client)
        # The server's limits, as a worker learns them when it registers (an endpoint never does).
        if delivery.payload_max_bytes:
            connection.payload_max_bytes = delivery.payload_max_bytes
        if delivery.batch_max_bytes:
            connection.pipeline.limit_batches(delivery.batch_max_bytes)
        reply = await execute(connection, version, activation, limit_s)
        outcome = reply.body.outcome if isinstance(reply.body, DeliveryAnswer) else reply.body.get("error")
        run, revision = activation.run_id, activation.revision
        log.info("delivery %s: run %s revision %d: %d %s", msg_id, run, revision, reply.status, outcome)
        return reply

    def _accept(self, headers: dict[str, str], body: bytes) -> tuple[str, Delivery] | Reply:
        """The delivery's id and body if it is signed, fresh, new and well-formed; else the refusal."""
        now = time.time()
        try:
            msg_id, timestamp_s = verify(self._secrets, headers, body, int(now))
        except WebhookVerificationError as e:
            log.info("delivery refused: %s", e)
            return Reply(401, {"error": str(e)})
        # Its signature is good until its timestamp is out of the tolerance: remembered until then.
        if not self._replays.accept(msg_id, timestamp_s + TOLERANCE_S, now):
            log.warning("delivery %s refused: replayed", msg_id)
            return Reply(401, {"error": "replayed: this webhook-id was already accepted"})
        try:
            delivery = _decoder.decode(body)
        except msgspec.DecodeError as e:
            return Reply(400, {"error": f"the body is not a delivery: {e}"})
        if delivery.time_limit_ms <= 0:
            return Reply(400, {"error": "the body is not a delivery: time_limit_ms must be positive"})
        return msg_id, delivery


def _check_secrets(secret: str | Sequence[str]) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("secret: give the endpoint's signing secret ('whsec_...')")
    for one in secrets:
        if not isinstance(one, str):
            raise ValueError("secret: a signing secret is a string, 'whsec_...'")
        try:
            secret_key(one)
        except ValueError as e:
            raise ValueError(f"secret: {e}") from None
    return secrets


def endpoint(
    workflows: Sequence[WorkflowVersion[Any, Any]],
    *,
    client: Client,
    secret: str | Sequence[str],
    time_limit: timedelta | None = None,
) -> Endpoint:
    """Define a push endpoint: an ASGI app that executes the runs an Aiki server delivers to it.

    Register its URL with the server (``POST /api/v1/endpoints``, or the dashboard's Endpoints
    page), naming the versions it serves; the server answers the signing secret, once.

    Args:
        workflows: The workflow versions it executes.
        client: The client it records through (an API key of the endpoint's namespace).
        secret: The endpoint's signing secret (``"whsec_..."``), or several: during a rotation,
            list the new one and the old one until the old one's grace period ends.
        time_limit: How long an activation may run here (e.g. your function platform's limit);
            the server's per-delivery limit applies as well, the shorter one rules. Shortly before
            it, the run is handed back: what finished is recorded, the rest runs on the next
            delivery.

    Returns:
        The ASGI app.

    Raises:
        ValueError: No workflow version, one listed twice, a secret that is not ``whsec_``
            followed by base64, or a non-positive ``time_limit``.
        TypeError: ``client`` is not an Aiki client, or a workflow not a workflow version.

    Example:
        Anything but a signed delivery is refused; here a stand-in server (``httpx.MockTransport``)
        and a fresh secret:

        >>> import asyncio
        >>> import httpx
        >>> import aiki
        >>> from aiki.worker_sdk.protocol.webhooks import new_secret
        >>> @aiki.workflow("hello").v("1.0.0")
        ... async def hello_v1(run: aiki.Run, name: str) -> str:
        ...     return f"hello {name}"
        >>> stand_in = aiki.client(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
        >>> app = aiki.endpoint([hello_v1], client=stand_in, secret=new_secret())
        >>> async def call() -> list[tuple[int, str]]:
        ...     transport = httpx.ASGITransport(app=app)
        ...     async with httpx.AsyncClient(transport=transport, base_url="http://fn") as http:
        ...         get = await http.get("/")
        ...         post = await http.post("/", json={"type": "activation"})
        ...     return [(get.status_code, get.headers["allow"]), (post.status_code, post.json()["error"])]
        >>> asyncio.run(call())  # doctest: +NORMALIZE_WHITESPACE
        [(405, 'POST'), (401, 'missing header: webhook-id, webhook-timestamp and webhook-signature are required')]
        >>> aiki.endpoint([hello_v1], client=stand_in, secret="hunter2")
        Traceback (most recent call last):
        ...
        ValueError: secret: a signing secret starts with 'whsec_'

        In a serverless function (any ASGI host: mount ``app`` in Starlette, FastAPI or Litestar,
        or serve it alone with ``uvicorn fn:app``)::

            # fn.py
            import os
            from datetime import timedelta

            import aiki
            from myapp.workflows import order_v1

            app = aiki.endpoint(
                [order_v1],
                client=aiki.client(url=os.environ["AIKI_URL"], api_key=os.environ["AIKI_API_KEY"]),
                secret=os.environ["AIKI_ENDPOINT_SECRET"],
                time_limit=timedelta(seconds=25),
            )
    """
    return Endpoint(workflows, client, secret, time_limit)
