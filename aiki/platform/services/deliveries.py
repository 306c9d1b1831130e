"""Push delivery's use cases: POST one activation to an endpoint, record what came of it, and read
an endpoint's or a run's delivery attempts.

The runtime's deliverers (``aiki.platform.runtime.push_loop``) claim runs for an endpoint like a
worker does (``services/executions.claim``, leased to ``endpoint:<id>``), then for each:
:func:`post` (SSRF re-check, signed POST, the answer classified), :func:`record` (one attempt row,
the breaker and last delivery of the endpoint, and the run given back when the endpoint left it
held), and on a failure :func:`refresh` before the next attempt (the revision moves on, fencing
the old activation). :func:`admit` keeps the endpoint's concurrency across replicas;
:func:`give_back` puts back what a deliverer holds but will not deliver.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from aiki.platform.db.executor_store import executor_store
from aiki.platform.db.push_repo import DeliveryRepository, PushTargetRepository
from aiki.platform.db.raw import Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.domain import push
from aiki.platform.domain import values as v
from aiki.platform.domain.endpoints import DeliveryAttempt
from aiki.platform.domain.errors import EndpointUrlRefused, RunNotFound
from aiki.platform.domain.ids import now_ms
from aiki.platform.services import rows
from aiki.platform.services.context import Services
from aiki.platform.services.delivery_body import encode_delivery
from aiki.platform.services.url_guard import check_url
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.protocol import webhooks

log = logging.getLogger("aiki.push")

_answer_decoder = msgspec.json.Decoder(p.DeliveryAnswer)
_HEADERS = {"content-type": "application/json", "user-agent": "aiki-push/1"}


@dataclass(frozen=True, slots=True)
class PostResult:
    """What one POST came to: an answer's outcome (``completed`` ...) or a failure's
    (``http_error``, ``timeout``, ``connection_error``, ``bad_answer``, ``refused``)."""

    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None

    @property
    def failed(self) -> bool:
        return self.outcome in push.FAILURES


# -- the runtime's reads ------------------------------------------------------------------------


async def load_targets(svc: Services) -> tuple[list[push.Target], dict[str, str]]:
    """The enabled endpoints of every namespace, secrets opened; and those that cannot be
    delivered to (endpoint id → why: their secret does not open under the server secret)."""
    async with svc.db.autocommit() as conn:
        found = await PushTargetRepository(conn).enabled()
    targets: list[push.Target] = []
    unusable: dict[str, str] = {}
    for row in found:
        target = _target(svc, row)
        if isinstance(target, str):
            unusable[row["id"]] = target
        else:
            targets.append(target)
    return targets, unusable


def _target(svc: Services, row: Row) -> push.Target | str:
    box = svc.secret_box
    if box is None:
        return "the server has no secret key to open its signing secret with"
    try:
        secret = box.open(row["secret"], context=row["id"])
    except Exception as exc:  # SecretBoxError, or a malformed value
        return f"its signing secret does not open under the server secret ({type(exc).__name__})"
    previous = None
    if row["previous_secret"] is not None and (row["previous_secret_expires_at"] or 0) > now_ms():
        # The previous one is a courtesy during a rotation: when it does not open, the current signs alone.
        with contextlib.suppress(Exception):
            previous = box.open(row["previous_secret"], context=row["id"])
    versions = msgspec.json.decode(row["versions"])
    return push.Target(
        id=row["id"],
        namespace_id=row["namespace_id"],
        url=row["url"],
        versions=tuple((w, ver) for w, ver in versions),
        pools=tuple(msgspec.json.decode(row["pools"])),
        concurrency=row["concurrency"],
        timeout_ms=row["timeout_ms"],
        secret=secret,
        previous_secret=previous,
        previous_secret_expires_at=row["previous_secret_expires_at"],
        updated_at=row["updated_at"],
    )


async def endpoint_state(svc: Services, target: push.Target) -> push.EndpointState | None:
    """The endpoint's breaker and its runs in flight (every replica's); None once it is disabled or gone."""
    async with svc.db.autocommit() as conn:
        row = await DeliveryRepository(conn, target.namespace_id).state(target.id, target.worker_id)
    if row is None:
        return None
    return push.EndpointState(breaker=_breaker(row), in_flight=int(row["in_flight"]))


def _breaker(row: Row) -> push.Breaker:
    return push.Breaker(
        state=row["breaker"],
        until=row["breaker_until"],
        opens=row["breaker_opens"],
        failures=row["consecutive_failures"],
    )


def breaker_policy(svc: Services, target: push.Target) -> push.BreakerPolicy:
    s = svc.settings
    return push.BreakerPolicy(
        threshold=s.endpoint_breaker_threshold,
        cooldown_ms=s.endpoint_breaker_cooldown_ms,
        cooldown_max_ms=s.endpoint_breaker_cooldown_max_ms,
        # The probe's delivery may take the endpoint's whole timeout, and its backoff is not waited.
        probe_window_ms=target.timeout_ms + 5_000,
    )


async def take_probe(svc: Services, target: push.Target, now: int) -> bool:
    """Take the one probe of the endpoint's breaker (open with its cooldown over, or half-open with
    its probe lost): True for exactly one caller across replicas."""
    until = now + breaker_policy(svc, target).probe_window_ms
    async with svc.db.autocommit() as conn:
        taken = await DeliveryRepository(conn, target.namespace_id).take_probe(target.id, now, until)
    if taken:
        log.info("endpoint %s: breaker half-open, one probe delivery", target.id)
    return taken


# -- claims -------------------------------------------------------------------------------------


async def admit(svc: Services, target: push.Target, claimed: list[v.Activation]) -> list[v.Activation]:
    """The runs just claimed for ``target`` that may be delivered: those within its concurrency,
    counting every replica's. The rest go back to the queue at once, never POSTed.

    Claims of replicas race; the count after them settles it without a lock. Each claim commits
    before its claimer counts, and each count reads what was committed when it began (READ
    COMMITTED; SQLite has one writer). Of two claimers, the one that counts later therefore sees
    the other's claim as well as its own, and keeps only what fits beside it: the runs kept never
    exceed the limit (a race may put back more than needed, never fewer).
    """
    if not claimed:
        return []
    ns = target.namespace_id
    async with svc.db.autocommit() as conn:
        in_flight = await DeliveryRepository(conn, ns).in_flight(target.worker_id)
    over = min(len(claimed), in_flight - target.concurrency)
    if over <= 0:
        return claimed
    excess = claimed[len(claimed) - over :]
    reason = f"claimed by {target.worker_id} beyond its concurrency: handed back"
    await executor_store(svc.db, ns).requeue(
        [(a.run_id, a.revision) for a in excess], target.worker_id, reason, now_ms()
    )
    _announce(svc, ns, [a.run_id for a in excess])
    return claimed[: len(claimed) - over]


async def give_back(svc: Services, target: push.Target, held: dict[str, int], reason: str, *, posted: bool) -> None:
    """Put runs ``target`` holds (id → revision) back in the queue; a run that moved on is left alone.

    Never POSTed: as if never claimed. POSTed (the endpoint may have recorded some of it): released
    as a stopping worker's run is (the revision moves on, no recovery counted).
    """
    if not held:
        return
    ns = target.namespace_id
    now = now_ms()
    if posted:
        async with svc.db.raw_transaction() as conn:
            done = await RunRepository(conn, ns).release(target.worker_id, held, reason, now)
    else:
        await executor_store(svc.db, ns).requeue(list(held.items()), target.worker_id, reason, now)
        done = list(held)
    _announce(svc, ns, done)


def _announce(svc: Services, ns: str, run_ids: Sequence[str]) -> None:
    if not run_ids:
        return
    svc.hub.notify(f"ready:{ns}")
    for run_id in run_ids:
        svc.hub.notify(f"run:{run_id}")


# -- one POST -----------------------------------------------------------------------------------


ANSWER_MAX_BYTES = 64 * 1024
"""The most of an endpoint's answer read (a delivery answer is a few dozen bytes)."""


def open_session() -> aiohttp.ClientSession:
    """The HTTP session a deliverer POSTs through (in the running event loop): aiohttp, which costs
    a fraction of httpx's CPU per request. Its connections are not limited (the deliverer keeps the
    endpoint's concurrency: a POST never waits for a connection within its timeout). No redirect is
    ever followed, no proxy or cookie used."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=15)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


async def post(
    svc: Services, target: push.Target, session: aiohttp.ClientSession, a: v.Activation, attempt: int
) -> PostResult:
    """POST ``a`` to the endpoint, signed; what came of it (never raises for the endpoint's faults)."""
    allow = svc.settings.endpoints_allow_private
    try:
        if svc.url_resolver is not None:
            await check_url(target.url, allow_private=allow, resolve=svc.url_resolver)
        else:
            await check_url(target.url, allow_private=allow)
    except EndpointUrlRefused as e:
        return PostResult(push.REFUSED, None, None, push.truncate_error(e.reason))
    limit_ms = push.time_limit_ms(target.timeout_ms)
    body = encode_delivery(target.id, attempt, limit_ms, a, svc.settings.max_payload_bytes)
    now = now_ms()
    signed = webhooks.signed_headers(target.secrets(now), f"{a.run_id}.{a.revision}", now // 1000, body)
    headers = {**_HEADERS, **signed}
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=target.timeout_ms / 1000)
    try:
        async with session.post(
            target.url, data=body, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            content = await _read(response)
            code, reason = response.status, response.reason or ""
    except TimeoutError:
        return PostResult(push.TIMEOUT, None, _since(started), f"no answer within {target.timeout_ms} ms")
    except aiohttp.ClientError as e:
        return PostResult(push.CONNECTION_ERROR, None, _since(started), push.truncate_error(_describe(e)))
    return _answer(code, reason, content, a, _since(started))


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most :data:`ANSWER_MAX_BYTES` of it."""
    content = b""
    async for chunk in response.content.iter_chunked(16 * 1024):
        content += chunk
        if len(content) >= ANSWER_MAX_BYTES:
            return content[:ANSWER_MAX_BYTES]
    return content


def _answer(code: int, reason: str, content: bytes, a: v.Activation, latency_ms: int) -> PostResult:
    if not 200 <= code < 300:
        text = content.decode(errors="replace").strip() or reason
        return PostResult(push.HTTP_ERROR, code, latency_ms, push.truncate_error(f"HTTP {code}: {text}"))
    try:
        answer = _answer_decoder.decode(content)
    except msgspec.ValidationError as e:
        return PostResult(push.BAD_ANSWER, code, latency_ms, push.truncate_error(f"not a delivery answer: {e}"))
    except msgspec.DecodeError:
        return PostResult(push.BAD_ANSWER, code, latency_ms, "not a delivery answer: the body is not JSON")
    if answer.run_id != a.run_id or answer.revision != a.revision:
        error = f"the answer names run {answer.run_id!r} at revision {answer.revision}, not the one delivered"
        return PostResult(push.BAD_ANSWER, code, latency_ms, error)
    return PostResult(answer.outcome, code, latency_ms, None)


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


# -- what came of it ----------------------------------------------------------------------------


async def record(
    svc: Services, target: push.Target, a: v.Activation, attempt: int, result: PostResult, *, touch: bool = True
) -> push.Breaker | None:
    """Write the attempt row, move the endpoint's breaker and last delivery, and (after an answer)
    give the run back when the endpoint left it held at this revision (it handed it back, or
    answered without recording an ending). One transaction. Returns the breaker after it; None
    when the endpoint is gone.

    A success closes the breaker whatever it was, so it need not read it; with ``touch`` False
    (the deliverer knows the breaker closed and wrote the endpoint's row a moment ago) it leaves
    the row alone: every delivery rewriting that one row would make them all wait on its lock.
    """
    ns = target.namespace_id
    now = now_ms()
    if not result.failed and not touch:
        return await _record_answer(svc, target, a, attempt, result, now)
    released: list[str] = []
    async with svc.db.raw_transaction() as conn:
        repo = DeliveryRepository(conn, ns)
        if result.failed:
            before, breaker = await _failure(svc, repo, target, now)
        else:
            before, breaker = push.CLOSED, push.Breaker()
        # The endpoint's row first, the run's after (the order the registry's delete takes them in).
        written = breaker is not None
        if breaker is not None and (result.failed or touch):
            written = await repo.update_endpoint(target.id, _endpoint_values(breaker, result, now))
        if written:
            written = await repo.insert_delivery(_attempt_values(target, a, attempt, result, now))
        breaker = breaker if written else None
        if not result.failed:
            reason = f"delivered to {target.worker_id} ({result.outcome}): back to the queue"
            released = await RunRepository(conn, ns).release(target.worker_id, {a.run_id: a.revision}, reason, now)
    _announce(svc, ns, released)
    if result.failed:
        log.warning(
            "endpoint %s: delivery of run %s (revision %d, attempt %d) failed: %s %s",
            target.id,
            a.run_id,
            a.revision,
            attempt,
            result.outcome,
            result.error or "",
        )
        if breaker is not None and breaker.state != before:
            log.warning("endpoint %s: breaker %s -> %s", target.id, before, breaker.state)
    return breaker


async def _record_answer(
    svc: Services, target: push.Target, a: v.Activation, attempt: int, result: PostResult, now: int
) -> push.Breaker | None:
    """:func:`record` of an answer that leaves the endpoint's row alone: one statement on PostgreSQL."""
    reason = f"delivered to {target.worker_id} ({result.outcome}): back to the queue"
    store = executor_store(svc.db, target.namespace_id)
    written, released = await store.delivered(
        a.run_id, a.revision, target.worker_id, reason, now, _attempt_values(target, a, attempt, result, now)
    )
    _announce(svc, target.namespace_id, [a.run_id] if released else [])
    return push.Breaker() if written else None


async def _failure(
    svc: Services, repo: DeliveryRepository, target: push.Target, now: int
) -> tuple[str | None, push.Breaker | None]:
    """The breaker before and after a failed delivery (the endpoint's row locked); Nones when it is gone."""
    row = await repo.lock(target.id)
    if row is None:
        return None, None
    return row["breaker"], push.breaker_after(_breaker(row), "failure", now, breaker_policy(svc, target))


def _endpoint_values(breaker: push.Breaker, result: PostResult, now: int) -> dict[str, Any]:
    return {
        "breaker": breaker.state,
        "breaker_until": breaker.until,
        "breaker_opens": breaker.opens,
        "consecutive_failures": breaker.failures,
        "last_delivery_at": now,
        "last_status_code": result.status_code,
        "last_error": result.error,
    }


def _attempt_values(target: push.Target, a: v.Activation, attempt: int, result: PostResult, now: int) -> dict[str, Any]:
    return {
        "endpoint_id": target.id,
        "run_id": a.run_id,
        "revision": a.revision,
        "attempt": attempt,
        "outcome": result.outcome,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "error": result.error,
        "created_at": now,
    }


async def refresh(svc: Services, target: push.Target, a: v.Activation) -> v.Activation | None:
    """The activation of the next delivery attempt: the run's revision moves on (the old attempt's
    writes are fenced) and its lease is kept and extended; the replay state is read again (the
    old attempt may have recorded some of it). None when the run moved on meanwhile."""
    now = now_ms()
    store = executor_store(svc.db, target.namespace_id)
    revision = await store.refence(a.run_id, target.worker_id, a.revision, now, now + svc.settings.lease_ttl_ms)
    if revision is None:
        return None
    state = (await store.replay_state([a.run_id]))[a.run_id]
    return msgspec.structs.replace(
        a,
        revision=revision,
        tasks=[rows.task_entry(t) for t in state["tasks"]],
        events=[rows.event_entry(e) for e in state["events"]],
        sleeps=[v.SleepEntry(x["name"], x["seq"], x["status"], x["wake_at"]) for x in state["sleeps"]],
        wait_timeouts=[v.WaitTimeoutEntry(w["name"], w["seq"]) for w in state["wait_timeouts"]],
        children=[rows.child_entry(c) for c in state["children"]],
    )


# -- reads --------------------------------------------------------------------------------------


def _attempt(row: Row) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        run_id=row["run_id"],
        revision=row["revision"],
        attempt=row["attempt"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        latency_ms=row["latency_ms"],
        error=row["error"],
        created_at=row["created_at"],
    )


async def run_deliveries(svc: Services, ns: str, run_id: str) -> list[DeliveryAttempt]:
    """A run's delivery attempts in the order they were sent (by revision; see ``DeliveryRepository.by_run``).

    Raises:
        RunNotFound: no such run in the namespace.
    """
    async with svc.db.autocommit() as conn:
        if not await RunRepository(conn, ns).exists(run_id):
            raise RunNotFound(run_id)
        found = await DeliveryRepository(conn, ns).by_run(run_id)
    return [_attempt(r) for r in found]


async def endpoint_deliveries(svc: Services, ns: str, endpoint_id: str, limit: int = 50) -> list[DeliveryAttempt]:
    """An endpoint's latest delivery attempts, newest first (none for an endpoint of another namespace)."""
    async with svc.db.autocommit() as conn:
        found = await DeliveryRepository(conn, ns).by_endpoint(endpoint_id, max(1, min(limit, 500)))
    return [_attempt(r) for r in found]
