"""An integrity violation nothing handled (a request racing another) is a 409 ``conflict``, on the
API, the dashboard and the in-process port, on both databases, and no log line carries the values
that violated it: engines hide SQL parameters, and the log names the constraint only."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from aiki.platform.db.catalog_repo import CatalogRepository
from aiki.platform.db.integrity import describe, integrity_violation
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID, workers
from aiki.platform.services.context import Services
from aiki.worker_sdk.errors import AikiError
from aiki.worker_sdk.protocol import RegisterWorkerRequest, VersionSpec
from tests.dashboard.support import UI, signup
from tests.iam_support import API, IamHarness

# Values that must never reach a log: one in the violated key (PostgreSQL's DETAIL would repeat
# it), one in another column (SQLAlchemy's message would list it among the parameters).
KEY_VALUE = "key-value-7f3a9c"
OTHER_VALUE = "host-value-c0ffee"


def _row(namespace_id: str = DEFAULT_NAMESPACE_ID) -> dict[str, Any]:
    return {
        "id": KEY_VALUE,
        "namespace_id": namespace_id,
        "host": OTHER_VALUE,
        "versions": "[]",
        "pools": "[]",
        "concurrency": 1,
        "started_at": 1,
        "last_heartbeat_at": 1,
    }


async def _insert_twice(conn: Any, row: dict[str, Any]) -> None:
    """A real violation from the real database: the same worker inserted twice."""
    await conn.execute(workers.insert().values(**row))
    await conn.execute(workers.insert().values(**row))


@pytest.fixture
def racing_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registration loses a race: its write meets a row another request just wrote."""

    async def upsert_worker(self: CatalogRepository, values: dict[str, Any]) -> None:
        await _insert_twice(self.conn, {**values, "namespace_id": self.namespace_id})

    monkeypatch.setattr(CatalogRepository, "upsert_worker", upsert_worker)


def _no_values_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert KEY_VALUE not in caplog.text
    assert OTHER_VALUE not in caplog.text
    for record in caplog.records:
        assert record.exc_info is None, f"a traceback was logged: {record.getMessage()}"


def _register_body() -> dict[str, Any]:
    return {"worker_id": KEY_VALUE, "host": OTHER_VALUE, "versions": [{"workflow": "wf", "version": "1"}]}


async def test_the_engine_hides_parameters_and_the_violation_is_described_without_values(
    iam_aiki: IamHarness,
) -> None:
    db = iam_aiki.server.db
    assert db.engine.sync_engine.hide_parameters
    with pytest.raises(sa_exc.IntegrityError) as caught:
        async with db.transaction() as conn:
            await _insert_twice(conn, _row())
    assert OTHER_VALUE not in str(caught.value)
    violation = integrity_violation(caught.value)
    assert violation is not None
    described = describe(violation)
    assert "workers" in described or "pk_workers" in described, described
    assert KEY_VALUE not in described
    assert OTHER_VALUE not in described
    assert integrity_violation(ValueError("UNIQUE constraint failed")) is None


@pytest.mark.usefixtures("racing_registration")
async def test_an_unhandled_integrity_error_is_a_409_conflict_on_the_api(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    worker = iam_aiki.key_http((await iam_aiki.create_key(owner, "worker"))["key"])
    caplog.set_level(logging.DEBUG)

    answer = await worker.post(f"{API}/workers/register", json=_register_body())

    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "conflict"
    assert any("conflict on POST /api/v1/workers/register" in r.getMessage() for r in caplog.records)
    _no_values_logged(caplog)


@pytest.mark.usefixtures("racing_registration")
async def test_an_unhandled_integrity_error_is_a_conflict_on_the_in_process_port(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    from aiki.api.local_port import LocalPort

    caplog.set_level(logging.DEBUG)
    port = LocalPort(Services(iam_aiki.server.db), DEFAULT_NAMESPACE_ID)
    request = RegisterWorkerRequest(worker_id=KEY_VALUE, host=OTHER_VALUE, versions=[VersionSpec("wf", "1")])
    with pytest.raises(AikiError) as caught:
        await port.register_worker(request)
    assert caught.value.status == 409
    _no_values_logged(caplog)


async def test_an_unhandled_integrity_error_is_a_409_page_on_the_dashboard(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = await signup(iam_aiki, "owner@example.com")
    db = iam_aiki.server.db

    async def racing_list(_svc: Services, ns: str) -> None:
        async with db.transaction() as conn:
            await _insert_twice(conn, _row(ns))

    monkeypatch.setattr("aiki.dashboard.admin_pages.queries.list_workers", racing_list)
    caplog.set_level(logging.DEBUG)

    page = await browser.http.get(f"{UI}/ns/{browser.namespace_id}/workers/")

    assert page.status_code == 409, page.text
    assert "text/html" in page.headers["content-type"]
    assert "Conflict" in page.text
    assert KEY_VALUE not in page.text
    _no_values_logged(caplog)
    async with db.engine.connect() as conn:  # the racing transaction was rolled back
        assert await conn.scalar(sa.select(sa.func.count()).select_from(workers).where(workers.c.id == KEY_VALUE)) == 0
