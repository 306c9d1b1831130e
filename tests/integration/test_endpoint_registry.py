"""The push endpoint registry (SPEC §8): register, read, change, rotate, delete, on both databases.

The services are called directly (the routes are tested with the API). Host names resolve through
a fake resolver (``Services.url_resolver``): nothing here depends on external DNS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiki.platform.db.endpoints_repo import EndpointDirectory
from aiki.platform.db.engine import Database
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.errors import (
    EndpointNotFound,
    EndpointUrlRefused,
    InputInvalid,
    SecretKeyRequired,
    VersionServedElsewhere,
)
from aiki.platform.domain.ids import new_id, now_ms
from aiki.platform.domain.settings import Settings
from aiki.platform.secret_box import SecretBox
from aiki.platform.services import endpoints, executions, runs
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.protocol import webhooks

NS = DEFAULT_NAMESPACE_ID
SERVER_SECRET = "endpoint-registry-test-secret-0123456789-abcdefghijklmnop"
PUBLIC_URL = "https://hooks.example.com/aiki"

# What the fake resolver answers: one public name, one that resolves to a private address.
ADDRESSES = {
    "hooks.example.com": ["93.184.216.34"],
    "other.example.com": ["93.184.216.35"],
    "internal.example.com": ["10.1.2.3"],
    "sneaky.example.com": ["93.184.216.36", "169.254.169.254"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    try:
        return ADDRESSES[host]
    except KeyError:
        raise OSError(f"unknown host {host}") from None


def _services(db: Database, *, allow_private: bool = False) -> Services:
    svc = Services(db, Settings(lease_ttl_ms=5_000, endpoints_allow_private=allow_private))
    svc.secret_box = SecretBox(SERVER_SECRET)
    svc.url_resolver = fake_resolve
    return svc


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url, migrate=False)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def svc(db: Database) -> Services:
    return _services(db)


def _create(url: str = PUBLIC_URL, versions: tuple[tuple[str, str], ...] = (("reg-wf", "1.0.0"),), **kw: Any) -> Any:
    return p.EndpointCreate(url=url, versions=[p.VersionRef(w, v) for w, v in versions], **kw)


async def _row(svc: Services, endpoint_id: str) -> dict[str, Any]:
    async with svc.db.autocommit() as conn:
        row = await conn.fetchrow("SELECT * FROM endpoints WHERE id = $1", endpoint_id)
    assert row is not None
    return dict(row)


async def _register_worker(svc: Services, worker_id: str, versions: list[tuple[str, str]]) -> None:
    await executions.register_worker(
        svc,
        NS,
        p.RegisterWorkerRequest(
            worker_id=worker_id, host="test", versions=[p.VersionSpec(workflow=w, version=v) for w, v in versions]
        ),
    )


async def test_create_list_get_update_delete(svc: Services) -> None:
    since = svc.hub.version(endpoints.WAKE_KEY)
    made = await endpoints.create_endpoint(svc, NS, _create(pools=["gpu"], concurrency=5, timeout_ms=10_000))
    assert svc.hub.version(endpoints.WAKE_KEY) > since, "the deliverers are told"
    ep = made.endpoint
    assert made.secret.startswith("whsec_")
    webhooks.secret_key(made.secret)  # a usable Standard Webhooks secret
    assert ep.url == PUBLIC_URL
    assert ep.versions == (("reg-wf", "1.0.0"),)
    assert ep.pools == ("gpu",)
    assert (ep.concurrency, ep.timeout_ms, ep.enabled) == (5, 10_000, True)
    assert ep.secret_hint == made.secret[:12] + "…"
    assert ep.health.breaker == "closed"
    assert ep.health.consecutive_failures == 0
    assert (ep.health.deliveries_last_hour, ep.health.failures_last_hour) == (0, 0)

    assert [e.id for e in await endpoints.list_endpoints(svc, NS)] == [ep.id]
    got = await endpoints.get_endpoint(svc, NS, ep.id)
    assert got.versions == ep.versions
    assert got.secret_hint == ep.secret_hint

    since = svc.hub.version(endpoints.WAKE_KEY)
    changed = await endpoints.update_endpoint(
        svc, NS, ep.id, p.EndpointUpdate(url="https://other.example.com/x", enabled=False, concurrency=7)
    )
    assert svc.hub.version(endpoints.WAKE_KEY) > since
    assert (changed.url, changed.enabled, changed.concurrency, changed.pools) == (
        "https://other.example.com/x",
        False,
        7,
        ("gpu",),
    )
    assert changed.updated_at >= ep.updated_at
    again = await endpoints.get_endpoint(svc, NS, ep.id)
    assert (again.url, again.enabled, again.concurrency) == ("https://other.example.com/x", False, 7)

    since = svc.hub.version(endpoints.WAKE_KEY)
    await endpoints.delete_endpoint(svc, NS, ep.id)
    assert svc.hub.version(endpoints.WAKE_KEY) > since
    assert await endpoints.list_endpoints(svc, NS) == []
    with pytest.raises(EndpointNotFound):
        await endpoints.get_endpoint(svc, NS, ep.id)
    with pytest.raises(EndpointNotFound):
        await endpoints.delete_endpoint(svc, NS, ep.id)


async def test_the_signing_secret_is_stored_sealed_never_in_clear(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create())
    row = await _row(svc, made.endpoint.id)
    assert made.secret not in str(row)
    assert made.secret.removeprefix("whsec_") not in str(row)
    assert row["secret_hint"] == made.secret[:12] + "…"
    assert svc.secret_box is not None
    assert svc.secret_box.open(row["secret"], context=made.endpoint.id) == made.secret
    # Bound to its endpoint: the sealed value does not open as another endpoint's.
    with pytest.raises(Exception, match="sealed under another server secret"):
        svc.secret_box.open(row["secret"], context=new_id())


async def test_rotation_keeps_the_previous_secret_until_its_grace_ends(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create())
    box = svc.secret_box
    assert box is not None
    start = now_ms()
    rotated = await endpoints.rotate_secret(svc, NS, made.endpoint.id, grace_ms=60_000)
    assert rotated.secret != made.secret
    assert rotated.endpoint.secret_hint == rotated.secret[:12] + "…"
    expires = rotated.endpoint.previous_secret_expires_at
    assert expires is not None
    assert start + 60_000 <= expires <= now_ms() + 60_000
    row = await _row(svc, made.endpoint.id)
    assert made.secret not in str(row)
    assert rotated.secret not in str(row)
    assert endpoints.signing_secrets(box, row, now_ms()) == [rotated.secret, made.secret]
    assert endpoints.signing_secrets(box, row, expires) == [rotated.secret], "not after the grace"
    assert (await endpoints.get_endpoint(svc, NS, made.endpoint.id)).previous_secret_expires_at == expires

    # A rotation without grace drops the previous secret at once.
    third = await endpoints.rotate_secret(svc, NS, made.endpoint.id, grace_ms=0)
    row = await _row(svc, made.endpoint.id)
    assert row["previous_secret"] is None
    assert row["previous_secret_expires_at"] is None
    assert endpoints.signing_secrets(box, row, now_ms()) == [third.secret]

    with pytest.raises(InputInvalid) as bad:
        await endpoints.rotate_secret(svc, NS, made.endpoint.id, grace_ms=31 * 24 * 3600 * 1000)
    assert bad.value.field == "grace_ms"
    with pytest.raises(EndpointNotFound):
        await endpoints.rotate_secret(svc, NS, new_id(), grace_ms=0)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("https://internal.example.com/hook", "internal.example.com resolves to 10.1.2.3 is a private"),
        ("https://sneaky.example.com/hook", "metadata"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("https://nowhere.example.com/hook", "does not resolve"),
        ("ftp://hooks.example.com/hook", "only http and https"),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
    ],
)
async def test_ssrf_refusals_name_the_reason(svc: Services, url: str, reason: str) -> None:
    with pytest.raises(EndpointUrlRefused) as refused:
        await endpoints.create_endpoint(svc, NS, _create(url=url))
    assert reason in str(refused.value)
    assert refused.value.field == "url"
    assert await endpoints.list_endpoints(svc, NS) == []


async def test_private_addresses_are_allowed_when_the_server_allows_them(db: Database) -> None:
    svc = _services(db, allow_private=True)
    for url in ("http://127.0.0.1:8000/hook", "http://169.254.169.254/", "https://internal.example.com/hook"):
        made = await endpoints.create_endpoint(svc, NS, _create(url=url))
        assert made.endpoint.url == url
    # Still never another scheme, nor credentials.
    with pytest.raises(EndpointUrlRefused):
        await endpoints.create_endpoint(svc, NS, _create(url="file:///etc/passwd"))
    # A change of URL is checked as a registration is.
    strict = _services(db)
    first = (await endpoints.list_endpoints(strict, NS))[0]
    with pytest.raises(EndpointUrlRefused):
        await endpoints.update_endpoint(strict, NS, first.id, p.EndpointUpdate(url="http://10.0.0.8/"))


async def test_a_worker_serving_the_version_refuses_the_endpoint(svc: Services) -> None:
    await _register_worker(svc, "pull-1", [("reg-wf", "1.0.0"), ("reg-wf", "2.0.0")])
    with pytest.raises(VersionServedElsewhere) as conflict:
        await endpoints.create_endpoint(svc, NS, _create(versions=(("reg-wf", "2.0.0"),)))
    message = str(conflict.value)
    assert "'reg-wf' version '2.0.0'" in message
    assert "'pull-1'" in message
    assert conflict.value.code == "version_served_elsewhere"
    assert await endpoints.list_endpoints(svc, NS) == []
    # Another version of the same workflow is the endpoint's to serve.
    other = await endpoints.create_endpoint(svc, NS, _create(versions=(("reg-wf", "3.0.0"),)))
    # ... but it cannot take on a version the worker serves.
    with pytest.raises(VersionServedElsewhere):
        await endpoints.update_endpoint(
            svc, NS, other.endpoint.id, p.EndpointUpdate(versions=[p.VersionRef("reg-wf", "1.0.0")])
        )
    # Disabled, it may be registered; enabling it is refused while the worker is live.
    off = await endpoints.create_endpoint(svc, NS, _create(versions=(("reg-wf", "1.0.0"),), enabled=False))
    with pytest.raises(VersionServedElsewhere):
        await endpoints.update_endpoint(svc, NS, off.endpoint.id, p.EndpointUpdate(enabled=True))
    # A worker not heard from for a while is gone: its versions may be given to an endpoint.
    gone_at = now_ms() - endpoints.LIVE_AFTER_LEASES * svc.settings.lease_ttl_ms - 1_000
    async with svc.db.autocommit() as conn:
        await conn.execute("UPDATE workers SET last_heartbeat_at = $1 WHERE id = $2", gone_at, "pull-1")
    enabled = await endpoints.update_endpoint(svc, NS, off.endpoint.id, p.EndpointUpdate(enabled=True))
    assert enabled.enabled


async def test_an_endpoint_serving_the_version_refuses_the_worker(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create(versions=(("reg-wf", "1.0.0"),)))
    with pytest.raises(VersionServedElsewhere) as conflict:
        await _register_worker(svc, "pull-2", [("reg-wf", "0.9.0"), ("reg-wf", "1.0.0")])
    message = str(conflict.value)
    assert "'reg-wf' version '1.0.0'" in message
    assert made.endpoint.id in message
    async with svc.db.autocommit() as conn:
        assert await conn.fetchval("SELECT count(*) FROM workers") == 0
    # Workers of other versions are not affected.
    await _register_worker(svc, "pull-3", [("reg-wf", "0.9.0"), ("other-wf", "1.0.0")])
    # A disabled endpoint does not hold its versions.
    await endpoints.update_endpoint(svc, NS, made.endpoint.id, p.EndpointUpdate(enabled=False))
    await _register_worker(svc, "pull-2", [("reg-wf", "1.0.0")])


async def _other_namespace(svc: Services) -> str:
    org, ns = new_id(), new_id()
    async with svc.db.raw_transaction() as conn:
        await conn.execute("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)", org, "o", 0)
        await conn.execute(
            "INSERT INTO namespaces (id, organization_id, name, created_at) VALUES ($1, $2, $3, $4)", ns, org, "n", 0
        )
    return ns


async def test_another_namespace_sees_nothing(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create())
    other = await _other_namespace(svc)
    assert await endpoints.list_endpoints(svc, other) == []
    with pytest.raises(EndpointNotFound):
        await endpoints.get_endpoint(svc, other, made.endpoint.id)
    with pytest.raises(EndpointNotFound):
        await endpoints.update_endpoint(svc, other, made.endpoint.id, p.EndpointUpdate(enabled=False))
    with pytest.raises(EndpointNotFound):
        await endpoints.rotate_secret(svc, other, made.endpoint.id, grace_ms=0)
    with pytest.raises(EndpointNotFound):
        await endpoints.delete_endpoint(svc, other, made.endpoint.id)
    assert (await endpoints.get_endpoint(svc, NS, made.endpoint.id)).enabled
    # The runtime's directory sees the enabled endpoints of every namespace.
    theirs = await endpoints.create_endpoint(svc, other, _create(versions=(("theirs", "1"),)))
    off = await endpoints.create_endpoint(svc, other, _create(versions=(("theirs", "2"),), enabled=False))
    async with svc.db.autocommit() as conn:
        enabled = await EndpointDirectory(conn).enabled()
    assert {(r["namespace_id"], r["id"]) for r in enabled} == {(NS, made.endpoint.id), (other, theirs.endpoint.id)}
    assert off.endpoint.id not in {r["id"] for r in enabled}
    # Nor does a worker there conflict with it.
    await executions.register_worker(
        svc, other, p.RegisterWorkerRequest(worker_id="w", host="h", versions=[p.VersionSpec("reg-wf", "1.0.0")])
    )


async def test_the_catalogue_gets_the_versions_and_keeps_a_worker_s_schemas(svc: Services) -> None:
    schema = {"type": "object", "required": ["n"]}
    await executions.register_worker(
        svc,
        NS,
        p.RegisterWorkerRequest(
            worker_id="schemas",
            host="h",
            versions=[p.VersionSpec("cat-wf", "1.0.0", input_schema=schema, event_schemas={"paid": None})],
        ),
    )
    async with svc.db.autocommit() as conn:
        await conn.execute("UPDATE workers SET last_heartbeat_at = 0")  # gone
    await endpoints.create_endpoint(svc, NS, _create(versions=(("cat-wf", "1.0.0"), ("push-only", "1.0.0"))))
    kept = await svc.version(NS, "cat-wf", "1.0.0")
    assert kept.input_validator is not None, "the worker's schema is kept"
    push_only = await svc.version(NS, "push-only", "1.0.0")
    assert push_only.input_validator is None
    # Without schemas, any event is taken (decoded by the endpoint's code when the run waits).
    assert svc.event_validator(push_only, "push-only", "1.0.0", "payment") is None
    started = await runs.start_run(
        svc, NS, p.StartRunRequest(workflow="push-only", version="1.0.0", input={}, require_registered=True)
    )
    assert started.run.status == "queued"
    # Versions given by a change are registered too.
    ep = (await endpoints.list_endpoints(svc, NS))[0]
    await endpoints.update_endpoint(svc, NS, ep.id, p.EndpointUpdate(versions=[p.VersionRef("later", "2.0.0")]))
    assert (await svc.version(NS, "later", "2.0.0")).input_validator is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"versions": ()}, "versions"),
        ({"versions": (("a", "1"), ("a", "1"))}, "versions[1]"),
        ({"versions": ((" ", "1"),)}, "versions[0]"),
        ({"versions": (("a", ""),)}, "versions[0]"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1001}, "concurrency"),
        ({"timeout_ms": 999}, "timeout_ms"),
        ({"timeout_ms": 900_001}, "timeout_ms"),
        ({"pools": [" "]}, "pools"),
        ({"url": "https://hooks.example.com/" + "x" * 2048}, "url"),
        ({"url": "https://hooks.example.com/a b"}, "url"),
        ({"url": "https://hooks.example.com/\x00"}, "url"),
    ],
)
async def test_validation_errors_name_the_field(svc: Services, kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InputInvalid) as bad:
        await endpoints.create_endpoint(svc, NS, _create(**kw))
    assert bad.value.field == field
    assert field.split("[")[0] in str(bad.value)


async def test_update_validates_what_it_is_given(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create())
    for update, field in (
        (p.EndpointUpdate(concurrency=0), "concurrency"),
        (p.EndpointUpdate(timeout_ms=10), "timeout_ms"),
        (p.EndpointUpdate(versions=[]), "versions"),
        (p.EndpointUpdate(pools=[""]), "pools"),
    ):
        with pytest.raises(InputInvalid) as bad:
            await endpoints.update_endpoint(svc, NS, made.endpoint.id, update)
        assert bad.value.field == field
    unchanged = await endpoints.get_endpoint(svc, NS, made.endpoint.id)
    assert unchanged.concurrency == made.endpoint.concurrency
    assert unchanged.versions == made.endpoint.versions


async def test_without_a_server_secret_key_endpoints_are_refused(db: Database) -> None:
    svc = _services(db)
    svc.secret_box = None
    with pytest.raises(SecretKeyRequired) as refused:
        await endpoints.create_endpoint(svc, NS, _create())
    assert "AIKI_SECRET_KEY" in str(refused.value)


async def test_deleting_an_endpoint_puts_the_runs_it_holds_back_in_the_queue(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create(versions=(("held-wf", "1.0.0"),)))
    started = await runs.start_run(svc, NS, p.StartRunRequest(workflow="held-wf", version="1.0.0", input={}))
    owner = endpoints.endpoint_owner(made.endpoint.id)
    claimed = await executions.claim(
        svc, NS, p.ClaimRequest(worker_id=owner, versions=[p.VersionRef("held-wf", "1.0.0")])
    )
    assert [a.run_id for a in claimed] == [started.run.id]
    await endpoints.delete_endpoint(svc, NS, made.endpoint.id)
    async with svc.db.autocommit() as conn:
        run = await conn.fetchrow("SELECT status, lease_owner, revision FROM runs WHERE id = $1", started.run.id)
    assert run is not None
    assert (run["status"], run["lease_owner"]) == ("queued", None)
    assert run["revision"] > claimed[0].revision, "the old activation is fenced"


async def test_health_counts_the_last_hour_of_deliveries(svc: Services) -> None:
    made = await endpoints.create_endpoint(svc, NS, _create(versions=(("h-wf", "1.0.0"),)))
    started = await runs.start_run(svc, NS, p.StartRunRequest(workflow="h-wf", version="1.0.0", input={}))
    now = now_ms()
    rows = [
        ("completed", now),
        ("handed_back", now),
        ("http_error", now),
        ("timeout", now),
        ("connection_error", now - 2 * 3600 * 1000),  # older than an hour
    ]
    async with svc.db.raw_transaction() as conn:
        for attempt, (outcome, at) in enumerate(rows, start=1):
            await conn.execute(
                "INSERT INTO endpoint_deliveries (namespace_id, endpoint_id, run_id, revision, attempt, outcome, "
                "created_at) VALUES ($1, $2, $3, 1, $4, $5, $6)",
                NS,
                made.endpoint.id,
                started.run.id,
                attempt,
                outcome,
                at,
            )
        await conn.execute(
            "UPDATE endpoints SET breaker = 'open', breaker_until = $2, consecutive_failures = 5, "
            "last_status_code = 503, last_error = 'down' WHERE id = $1",
            made.endpoint.id,
            now + 5_000,
        )
    health = (await endpoints.get_endpoint(svc, NS, made.endpoint.id)).health
    assert (health.deliveries_last_hour, health.failures_last_hour) == (4, 2)
    assert (health.breaker, health.breaker_until, health.consecutive_failures) == ("open", now + 5_000, 5)
    assert (health.last_status_code, health.last_error) == (503, "down")
    listed = (await endpoints.list_endpoints(svc, NS))[0].health
    assert (listed.deliveries_last_hour, listed.failures_last_hour) == (4, 2)
