"""Push endpoints: register, read, change, delete, rotate the signing secret; and the rule that a
version is served by pull workers or by push endpoints in a namespace, never both.

An endpoint is a URL the runtime POSTs each ready run of its versions to (``runtime`` delivers;
docs/internals.md, "Push endpoints"). Its signing secret is made here, shown once (the answer of
create and rotate) and kept sealed under the server secret (``aiki.platform.secret_box``), bound
to the endpoint's id. During a rotation's grace period the previous secret is kept too (sealed the
same way) and deliveries carry both signatures (:func:`signing_secrets`).

The URL passes the SSRF guard (``url_guard``) when it is registered or changed, with
``Settings.endpoints_allow_private`` and the resolver ``Services.url_resolver`` (tests inject one).
Every change is announced on the ``endpoints`` wake-up key, so the deliverers reload.

Every function reads the time from ``svc.clock`` when a test set one, else from the wall clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from aiki.platform.db.endpoints_repo import EndpointRepository
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.domain.endpoints import Endpoint, EndpointHealthValue, EndpointSecret
from aiki.platform.domain.errors import (
    EndpointNotFound,
    InputInvalid,
    SecretKeyRequired,
    VersionServedElsewhere,
)
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.queries import normalize_pools
from aiki.platform.secret_box import SecretBox, SecretBoxError
from aiki.platform.services import url_guard
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.protocol import webhooks

WAKE_KEY = "endpoints"
"""Announced after every change of an endpoint: the deliverers load the endpoints again."""

MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 1000
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 1_000, 900_000
MAX_GRACE_MS = 30 * 24 * 3600 * 1000
MAX_URL_LENGTH = 2048
_MAX_WORKFLOW_LENGTH, _MAX_VERSION_LENGTH = 200, 100
_HINT_LENGTH = 12
_HOUR_MS = 3600 * 1000
# A worker heard from within this many lease TTLs serves its versions (as the workers list says
# ``active``); an older one is gone, and its versions may be given to an endpoint.
LIVE_AFTER_LEASES = 3

Versions = tuple[tuple[str, str], ...]


def endpoint_owner(endpoint_id: str) -> str:
    """The lease owner (``worker_id``) under which the runtime claims runs for an endpoint."""
    return f"endpoint:{endpoint_id}"


def _now(svc: Services) -> int:
    return svc.clock() if svc.clock is not None else now_ms()


def _box(svc: Services) -> SecretBox:
    if svc.secret_box is None:
        raise SecretKeyRequired()
    return svc.secret_box


# -- validation ---------------------------------------------------------------------------------


def _versions(refs: Sequence[p.VersionRef]) -> Versions:
    """The ``(workflow, version)`` pairs, checked: at least one, none blank or too long, no duplicate."""
    if not refs:
        raise InputInvalid("versions: an endpoint serves at least one workflow version", field="versions")
    seen: dict[tuple[str, str], None] = {}
    for i, ref in enumerate(refs):
        field = f"versions[{i}]"
        if not ref.workflow.strip() or len(ref.workflow) > _MAX_WORKFLOW_LENGTH:
            raise InputInvalid(
                f"{field}: a workflow name must be 1 to {_MAX_WORKFLOW_LENGTH} non-blank characters", field=field
            )
        if not ref.version.strip() or len(ref.version) > _MAX_VERSION_LENGTH:
            raise InputInvalid(
                f"{field}: a version must be 1 to {_MAX_VERSION_LENGTH} non-blank characters", field=field
            )
        key = (ref.workflow, ref.version)
        if key in seen:
            raise InputInvalid(
                f"{field}: workflow {ref.workflow!r} version {ref.version!r} is listed twice", field=field
            )
        seen[key] = None
    return tuple(seen)


def _in_range(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InputInvalid(f"{name} must be between {low:_} and {high:_}, got {value}", field=name)
    return value


async def _check_url(svc: Services, url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise InputInvalid(f"url must be at most {MAX_URL_LENGTH} characters", field="url")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InputInvalid("url must not contain spaces or control characters", field="url")
    allow = svc.settings.endpoints_allow_private
    if svc.url_resolver is not None:
        await url_guard.check_url(url, allow_private=allow, resolve=svc.url_resolver)
    else:
        await url_guard.check_url(url, allow_private=allow)
    return url


def _dump(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _load_versions(text: str) -> Versions:
    return tuple((str(w), str(v)) for w, v in msgspec.json.decode(text))


# -- the rule: pull workers or push endpoints, per version ----------------------------------------


async def _refuse_live_workers(svc: Services, repo: EndpointRepository, versions: Versions, now: int) -> None:
    """Raise when a live worker of the namespace serves one of ``versions``."""
    wanted = set(versions)
    seen_since = now - LIVE_AFTER_LEASES * svc.settings.lease_ttl_ms
    for worker in await repo.live_workers(seen_since):
        served = set(_load_versions(worker["versions"]))
        for workflow, version in sorted(wanted & served):
            ago_s = max(0, now - int(worker["last_heartbeat_at"])) / 1000
            raise VersionServedElsewhere(
                workflow,
                version,
                f"worker {worker['id']!r} (pull, last heard from {ago_s:.0f} s ago)",
                "stop the worker, or serve another version through the endpoint; a stopped worker stops "
                f"counting {LIVE_AFTER_LEASES} lease TTLs after its last heartbeat",
            )


async def refuse_versions_served_by_endpoints(svc: Services, ns: str, versions: Iterable[tuple[str, str]]) -> None:
    """Refuse a worker's registration when an enabled endpoint of ``ns`` serves one of its versions.

    Raises:
        VersionServedElsewhere: names the version and the endpoint.
    """
    wanted = set(versions)
    if not wanted:
        return
    async with svc.db.autocommit() as conn:
        rows = await EndpointRepository(conn, ns).endpoints(enabled_only=True)
    for row in rows:
        for workflow, version in sorted(wanted & set(_load_versions(row["versions"]))):
            raise VersionServedElsewhere(
                workflow,
                version,
                f"push endpoint {row['id']!r} ({row['url']})",
                "disable or delete the endpoint, or remove the version from it, before a worker serves it",
            )


# -- values -------------------------------------------------------------------------------------


def endpoint_value(row: Mapping[str, Any], counts: tuple[int, int] = (0, 0)) -> Endpoint:
    """The domain value of an ``endpoints`` row, with its deliveries and failures of the last hour."""
    return Endpoint(
        id=row["id"],
        namespace_id=row["namespace_id"],
        url=row["url"],
        versions=_load_versions(row["versions"]),
        pools=tuple(msgspec.json.decode(row["pools"])),
        concurrency=int(row["concurrency"]),
        timeout_ms=int(row["timeout_ms"]),
        enabled=bool(row["enabled"]),
        secret_hint=row["secret_hint"],
        created_at=int(row["created_at"]),
        updated_at=int(row["updated_at"]),
        previous_secret_expires_at=row["previous_secret_expires_at"],
        health=EndpointHealthValue(
            breaker=row["breaker"],
            consecutive_failures=int(row["consecutive_failures"]),
            breaker_until=row["breaker_until"],
            last_delivery_at=row["last_delivery_at"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            deliveries_last_hour=counts[0],
            failures_last_hour=counts[1],
        ),
    )


async def _values(repo: EndpointRepository, rows: Sequence[Mapping[str, Any]], now: int) -> list[Endpoint]:
    counts = await repo.delivery_counts([r["id"] for r in rows], now - _HOUR_MS)
    return [endpoint_value(r, counts.get(r["id"], (0, 0))) for r in rows]


def _hint(secret: str) -> str:
    return secret[:_HINT_LENGTH] + "…"


def signing_secrets(box: SecretBox, row: Mapping[str, Any], now: int) -> list[str]:
    """The secrets a delivery to the endpoint of ``row`` is signed with: the current one, and the
    previous one while its rotation's grace period lasts.

    Raises:
        SecretBoxError: the current secret does not open (sealed under a server secret this
            server no longer has).
    """
    secrets = [box.open(row["secret"], context=row["id"])]
    expires_at = row["previous_secret_expires_at"]
    if row["previous_secret"] and expires_at is not None and now < expires_at:
        # The previous one is a courtesy: when it no longer opens, the current one signs alone.
        with contextlib.suppress(SecretBoxError):
            secrets.append(box.open(row["previous_secret"], context=row["id"]))
    return secrets


# -- use cases ----------------------------------------------------------------------------------


async def create_endpoint(svc: Services, ns: str, req: p.EndpointCreate) -> EndpointSecret:
    """Register a push endpoint; its signing secret is in the answer, and nowhere else ever again.

    Raises:
        InputInvalid / EndpointUrlRefused: a bad field (the error names it), or a URL the SSRF
            guard refuses.
        SecretKeyRequired: the server has no secret key to seal the signing secret under.
        VersionServedElsewhere: a live worker of the namespace serves one of the versions.
    """
    box = _box(svc)
    versions = _versions(req.versions)
    pools = normalize_pools(req.pools, "pools")
    concurrency = _in_range(req.concurrency, "concurrency", MIN_CONCURRENCY, MAX_CONCURRENCY)
    timeout_ms = _in_range(req.timeout_ms, "timeout_ms", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)
    url = await _check_url(svc, req.url)
    endpoint_id = new_id()
    secret = webhooks.new_secret()
    now = _now(svc)
    values: dict[str, Any] = {
        "id": endpoint_id,
        "url": url,
        "versions": _dump(versions),
        "pools": _dump(pools),
        "concurrency": concurrency,
        "timeout_ms": timeout_ms,
        "enabled": req.enabled,
        "secret": box.seal(secret, context=endpoint_id),
        "secret_hint": _hint(secret),
        "previous_secret": None,
        "previous_secret_expires_at": None,
        "breaker": "closed",
        "breaker_until": None,
        "breaker_opens": 0,
        "consecutive_failures": 0,
        "last_delivery_at": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
    async with svc.db.raw_transaction() as conn:
        repo = EndpointRepository(conn, ns)
        if req.enabled:
            await _refuse_live_workers(svc, repo, versions, now)
        await repo.insert(values)
        await _register_versions(repo, versions, now)
    _changed(svc, ns, versions)
    return EndpointSecret(endpoint=endpoint_value({**values, "namespace_id": ns}), secret=secret)


async def _register_versions(repo: EndpointRepository, versions: Versions, now: int) -> None:
    # A run of a version the catalogue does not know is refused at start: a push-only version is
    # registered here (without schemas; a worker's registration is kept as it is).
    for workflow, version in versions:
        await repo.register_version(new_id(), new_id(), workflow, version, now)


def _changed(svc: Services, ns: str, versions: Iterable[tuple[str, str]] = ()) -> None:
    for workflow, version in versions:
        svc.forget_version(ns, workflow, version)
    svc.hub.notify(WAKE_KEY)


async def list_endpoints(svc: Services, ns: str) -> list[Endpoint]:
    """The namespace's endpoints, oldest first, with their health."""
    async with svc.db.autocommit() as conn:
        repo = EndpointRepository(conn, ns)
        return await _values(repo, await repo.endpoints(), _now(svc))


async def get_endpoint(svc: Services, ns: str, endpoint_id: str) -> Endpoint:
    """One endpoint of the namespace, with its health.

    Raises:
        EndpointNotFound: no such endpoint in ``ns`` (another namespace's is not found either).
    """
    async with svc.db.autocommit() as conn:
        repo = EndpointRepository(conn, ns)
        row = await repo.get(endpoint_id)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        return (await _values(repo, [row], _now(svc)))[0]


async def _changes(svc: Services, req: p.EndpointUpdate) -> dict[str, Any]:
    """The columns ``req`` changes, each checked as at registration."""
    changes: dict[str, Any] = {}
    if req.url is not None:
        changes["url"] = await _check_url(svc, req.url)
    if req.versions is not None:
        changes["versions"] = _dump(_versions(req.versions))
    if req.pools is not None:
        changes["pools"] = _dump(normalize_pools(req.pools, "pools"))
    if req.concurrency is not None:
        changes["concurrency"] = _in_range(req.concurrency, "concurrency", MIN_CONCURRENCY, MAX_CONCURRENCY)
    if req.timeout_ms is not None:
        changes["timeout_ms"] = _in_range(req.timeout_ms, "timeout_ms", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)
    if req.enabled is not None:
        changes["enabled"] = req.enabled
    return changes


async def update_endpoint(svc: Services, ns: str, endpoint_id: str, req: p.EndpointUpdate) -> Endpoint:
    """Change what ``req`` gives, keep the rest. Enabling an endpoint, or giving it other versions,
    checks again that no live worker serves them.

    Raises:
        EndpointNotFound: no such endpoint in ``ns``.
        InputInvalid / EndpointUrlRefused: a bad field (the error names it).
        VersionServedElsewhere: a live worker serves one of the versions it would serve.
    """
    changes = await _changes(svc, req)
    now = _now(svc)
    async with svc.db.raw_transaction() as conn:
        repo = EndpointRepository(conn, ns)
        row = await repo.get(endpoint_id, lock=True)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        changes = {k: v for k, v in changes.items() if _differs(row[k], v)}
        if not changes:
            return (await _values(repo, [row], now))[0]
        versions = _load_versions(str(changes.get("versions", row["versions"])))
        enabled = changes.get("enabled", bool(row["enabled"]))
        if enabled and ("versions" in changes or not row["enabled"]):
            await _refuse_live_workers(svc, repo, versions, now)
        changes["updated_at"] = now
        await repo.update(endpoint_id, changes)
        if "versions" in changes:
            await _register_versions(repo, versions, now)
        updated = {**row, **changes}
        value = (await _values(repo, [updated], now))[0]
    _changed(svc, ns, versions)
    return value


def _differs(stored: Any, given: Any) -> bool:
    if isinstance(given, bool):
        return bool(stored) is not given
    return bool(stored != given)


async def delete_endpoint(svc: Services, ns: str, endpoint_id: str) -> None:
    """Delete an endpoint and its delivery attempts; the runs it holds go back to the queue at once.

    Raises:
        EndpointNotFound: no such endpoint in ``ns``.
    """
    owner = endpoint_owner(endpoint_id)
    now = _now(svc)
    async with svc.db.raw_transaction() as conn:
        repo = EndpointRepository(conn, ns)
        row = await repo.get(endpoint_id, lock=True)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        held = await repo.held_runs(owner)
        released = await RunRepository(conn, ns).release(owner, held, f"endpoint {endpoint_id} deleted", now)
        await repo.delete(endpoint_id)
    if released:
        svc.hub.notify(f"ready:{ns}")
        for run_id in released:
            svc.hub.notify(f"run:{run_id}")
    _changed(svc, ns)


async def rotate_secret(svc: Services, ns: str, endpoint_id: str, grace_ms: int) -> EndpointSecret:
    """Give the endpoint a new signing secret (in the answer, shown once). The current one becomes
    the previous one and signs deliveries too for ``grace_ms`` (0: it stops at once).

    Raises:
        InputInvalid: ``grace_ms`` is not between 0 and 30 days.
        SecretKeyRequired: the server has no secret key.
        EndpointNotFound: no such endpoint in ``ns``.
    """
    box = _box(svc)
    _in_range(grace_ms, "grace_ms", 0, MAX_GRACE_MS)
    secret = webhooks.new_secret()
    now = _now(svc)
    async with svc.db.raw_transaction() as conn:
        repo = EndpointRepository(conn, ns)
        row = await repo.get(endpoint_id, lock=True)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        previous: str | None = None
        if grace_ms > 0:
            try:  # sealed again: under the current server secret, if it was rotated meanwhile
                previous = box.seal(box.open(row["secret"], context=endpoint_id), context=endpoint_id)
            except SecretBoxError:
                previous = None  # sealed under a server secret this server no longer has: unusable
        changes: dict[str, Any] = {
            "secret": box.seal(secret, context=endpoint_id),
            "secret_hint": _hint(secret),
            "previous_secret": previous,
            "previous_secret_expires_at": now + grace_ms if previous is not None else None,
            "updated_at": now,
        }
        await repo.update(endpoint_id, changes)
        value = (await _values(repo, [{**row, **changes}], now))[0]
    _changed(svc, ns)
    return EndpointSecret(endpoint=value, secret=secret)
