"""Run lists: every filter, the keyset cursor under concurrent inserts, bad values, bulk cancel, catalogue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiki.platform.db.queries_repo import QueryRepository
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
from aiki.platform.domain.queries import RunFilter
from aiki.worker_sdk.protocol import CancelRunsRequest

from .helpers import API
from .query_helpers import assert_bad_param, insert_child, list_all, list_page, register, start

A, B, C = "rq-alpha", "rq-beta", "rq-gamma"


async def _populate(aiki: Any) -> dict[str, Any]:
    """A namespace with runs that differ in every filtered field."""
    http = aiki.http
    await register(http, (A, "1"), (A, "2"), (B, "1"), (C, "1"))
    ids: dict[str, Any] = {}
    ids["a1"] = [await start(http, A, "1", i, reference_id=f"a1-{i}") for i in range(3)]
    ids["a2"] = [await start(http, A, "2", i) for i in range(2)]
    ids["sched"] = [await start(http, B, "1", i, reference_id=f"schedule:S1:{i}") for i in range(2)]
    # A schedule whose id extends the other's: its runs must not match schedule_id=S1.
    ids["sched10"] = [await start(http, B, "1", 9, reference_id="schedule:S10:0")]
    ids["gpu"] = [await start(http, C, "1", 0, pool="gpu")]
    ids["delayed"] = [await start(http, C, "1", 1, delay_ms=3_600_000)]
    resp = await http.post(f"{API}/runs/{ids['a1'][0]}/cancel", json={"reason": "test"})
    assert resp.status_code == 200, resp.text
    parent = ids["a2"][0]
    ids["children"] = [await insert_child(aiki, parent, C, "1") for _ in range(2)]
    ids["parent"] = parent
    return ids


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in items]


async def test_each_filter_selects_exactly_the_matching_runs_newest_first(aiki: Any) -> None:
    ids = await _populate(aiki)
    everything = await list_all(aiki.http)
    assert len(everything) == 3 + 2 + 2 + 1 + 1 + 1 + 2
    assert _ids(everything) == sorted(_ids(everything), reverse=True)
    created = [r["created_at"] for r in everything]
    assert created == sorted(created, reverse=True)  # newest first

    async def check(params: Any, predicate: Any) -> list[str]:
        got = _ids(await list_all(aiki.http, params))
        expected = [r["id"] for r in everything if predicate(r)]
        assert got == expected, params
        assert got, f"the filter {params} should match something"
        return got

    await check({"workflow": A}, lambda r: r["workflow"] == A)
    await check({"workflow": A, "version": "2"}, lambda r: r["workflow"] == A and r["version"] == "2")
    await check({"version": "1"}, lambda r: r["version"] == "1")
    await check({"reference_id": "a1-1"}, lambda r: r.get("reference_id") == "a1-1")
    got = await check({"schedule_id": "S1"}, lambda r: (r.get("reference_id") or "").startswith("schedule:S1:"))
    assert sorted(got) == sorted(ids["sched"])
    await check({"parent_run_id": ids["parent"]}, lambda r: r.get("parent_run_id") == ids["parent"])
    assert sorted(_ids(await list_all(aiki.http, {"parent_run_id": ids["parent"]}))) == sorted(ids["children"])
    await check({"pool": "gpu"}, lambda r: r.get("pool") == "gpu")
    await check({"pool": "default"}, lambda r: r.get("pool") is None)

    # Status: one value, a repeated parameter, a comma list.
    await check({"status": "cancelled"}, lambda r: r["status"] == "cancelled")
    await check({"status": "scheduled"}, lambda r: r["status"] == "scheduled")
    both = {"queued", "cancelled"}
    repeated = await check([("status", "queued"), ("status", "cancelled")], lambda r: r["status"] in both)
    assert _ids(await list_all(aiki.http, {"status": "queued,cancelled"})) == repeated
    await check({"status": "queued", "workflow": A}, lambda r: r["status"] == "queued" and r["workflow"] == A)

    # Created range: `created_after` is inclusive, `created_before` exclusive; ms or ISO 8601.
    pivot = everything[len(everything) // 2]["created_at"]
    await check({"created_after": pivot}, lambda r: r["created_at"] >= pivot)
    await check({"created_before": pivot}, lambda r: r["created_at"] < pivot)
    iso = datetime.fromtimestamp(pivot / 1000, tz=UTC).isoformat()
    await check({"created_after": iso}, lambda r: r["created_at"] >= pivot)
    await check({"created_before": iso.replace("+00:00", "Z")}, lambda r: r["created_at"] < pivot)
    first, last = everything[-1]["created_at"], everything[0]["created_at"]
    await check({"created_after": first, "created_before": last + 1, "workflow": B}, lambda r: r["workflow"] == B)

    # No match is an empty page, not an error.
    assert (await list_page(aiki.http, {"workflow": "nope"})) == {"items": []}


async def test_keyset_pages_see_every_existing_run_once_while_runs_are_inserted(aiki: Any) -> None:
    http = aiki.http
    await register(http, (A, "1"))
    existing = [await start(http, A, "1", i) for i in range(40)]
    expected = sorted(existing, reverse=True)  # newest first = descending (time-ordered) id
    inserted: list[str] = []
    stop = asyncio.Event()

    async def insert_continuously() -> None:
        i = 0
        while not stop.is_set():
            inserted.append(await start(http, A, "1", 1000 + i))
            i += 1
            await asyncio.sleep(0)

    for params in ({}, {"workflow": A, "status": "queued"}):
        stop.clear()
        writer = asyncio.create_task(insert_continuously())
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        try:
            while True:
                query = {**params, "limit": 6, **({"cursor": cursor} if cursor else {})}
                body = await list_page(http, query)
                seen.extend(_ids(body["items"]))
                pages += 1
                # And some more between two page fetches.
                inserted.append(await start(http, A, "1", -pages))
                cursor = body.get("next_cursor")
                if not cursor:
                    break
        finally:
            stop.set()
            await writer
        assert pages >= 40 // 6
        assert len(seen) == len(set(seen)), "a run was listed twice"
        assert seen == sorted(seen, reverse=True)
        assert [i for i in seen if i in set(existing)] == expected, "an existing run was skipped or misplaced"
        assert inserted, "nothing was inserted while paging"


async def test_bad_filter_values_are_refused_naming_the_parameter(aiki: Any) -> None:
    http = aiki.http
    await register(http, (A, "1"))
    run_id = await start(http, A, "1")
    cases: list[tuple[Any, str]] = [
        ({"status": "finished"}, "status"),
        ([("status", "queued"), ("status", "bogus")], "status"),
        ({"status": "queued,nope"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-13-45"}, "created_before"),
        ({"created_after": 2000, "created_before": 1000}, "created_after"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": run_id}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
    ]
    for params, name in cases:
        assert_bad_param(await http.get(f"{API}/runs", params=params), name)
    assert_bad_param(await http.get(f"{API}/runs/{run_id}/history", params={"group_by": "day"}), "group_by")
    resp = await http.post(f"{API}/runs/cancel", json={"status": ["bogus"]})
    assert_bad_param(resp, "status")
    assert_bad_param(await http.post(f"{API}/runs/cancel", json={"created_after": "soon"}), "created_after")
    assert_bad_param(await http.post(f"{API}/runs/cancel", json={"workflow": A, "limit": 0}), "limit")
    assert_bad_param(await http.post(f"{API}/runs/cancel", json={"workflow": A, "colour": "red"}), "colour")
    # No filter at all would cancel everything: refused.
    assert_bad_param(await http.post(f"{API}/runs/cancel", json={"reason": "oops"}), "filter")
    assert (await list_page(http))["items"][0]["status"] == "queued"


async def test_bulk_cancel_cancels_exactly_the_matching_live_runs(aiki: Any) -> None:
    http = aiki.http
    await register(http, (A, "1"), (B, "1"))
    targets = [await start(http, A, "1", i, reference_id=f"schedule:S7:{i}") for i in range(5)]
    other_schedule = await start(http, A, "1", 99, reference_id="schedule:S8:0")
    other_workflow = await start(http, B, "1", 0, reference_id="schedule:S7:b")
    already = await start(http, A, "1", 100, reference_id="schedule:S7:done")
    resp = await http.post(f"{API}/runs/{already}/cancel", json={"reason": "earlier"})
    assert resp.status_code == 200, resp.text

    body = {"workflow": A, "schedule_id": "S7", "reason": "schedule removed"}
    resp = await http.post(f"{API}/runs/cancel", json={**body, "limit": 2})
    assert resp.status_code == 200, resp.text
    first = resp.json()
    assert first["truncated"] is True
    assert first["cancelled"] == sorted(targets, reverse=True)[:2]  # newest first

    resp = await http.post(f"{API}/runs/cancel", json=body)
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second == {"cancelled": sorted(targets, reverse=True)[2:], "truncated": False}

    # Nothing left to cancel: an empty answer, not an error.
    resp = await http.post(f"{API}/runs/cancel", json=body)
    assert resp.json() == {"cancelled": [], "truncated": False}

    for run_id in targets:
        run = (await http.get(f"{API}/runs/{run_id}")).json()
        assert run["status"] == "cancelled"
        assert run["error"]["message"] == "schedule removed"
        history = (await http.get(f"{API}/runs/{run_id}/history")).json()
        assert [(h["from_status"], h["to_status"]) for h in history][-1] == ("queued", "cancelled")
    for run_id in (other_schedule, other_workflow):
        assert (await http.get(f"{API}/runs/{run_id}")).json()["status"] == "queued"
    earlier = (await http.get(f"{API}/runs/{already}")).json()
    assert earlier["error"]["message"] == "earlier"  # not cancelled a second time

    # A status filter naming only terminal statuses matches nothing to cancel.
    resp = await http.post(f"{API}/runs/cancel", json={"status": ["completed", "cancelled"]})
    assert resp.json() == {"cancelled": [], "truncated": False}
    # The list's status filter applies: only the queued run of B is cancelled.
    resp = await http.post(f"{API}/runs/cancel", json={"status": ["queued"], "workflow": B})
    assert resp.json() == {"cancelled": [other_workflow], "truncated": False}
    assert (await http.get(f"{API}/runs/{other_schedule}")).json()["status"] == "queued"


async def test_catalogue_lists_versions_with_run_counts_by_status(aiki: Any) -> None:
    http = aiki.http
    await register(http, (A, "1"), (A, "2"), (B, "1"), (C, "1"))
    a1 = [await start(http, A, "1", i) for i in range(3)]
    await start(http, A, "2", 0)
    await start(http, B, "1", 0, delay_ms=3_600_000)
    await http.post(f"{API}/runs/{a1[0]}/cancel", json={})

    resp = await http.get(f"{API}/workflows")
    assert resp.status_code == 200, resp.text
    items = {w["name"]: w for w in resp.json()["items"]}
    assert list(items) == sorted([A, B, C])
    alpha = items[A]
    assert [v["version"] for v in alpha["versions"]] == ["1", "2"]
    assert alpha["versions"][0]["run_counts"] == {"cancelled": 1, "queued": 2}
    assert alpha["versions"][0]["total_runs"] == 3
    assert alpha["versions"][1]["run_counts"] == {"queued": 1}
    assert alpha["run_counts"] == {"cancelled": 1, "queued": 3}
    assert alpha["total_runs"] == 4
    assert alpha["created_at"] > 0
    assert alpha["versions"][0]["created_at"] > 0
    assert items[B]["run_counts"] == {"scheduled": 1}
    assert items[C]["versions"] == [
        {"version": "1", "run_counts": {}, "total_runs": 0, **_times(items[C]["versions"][0])}
    ]
    assert items[C]["total_runs"] == 0


def _times(version: dict[str, Any]) -> dict[str, Any]:
    return {"created_at": version["created_at"], "updated_at": version["updated_at"]}


async def test_sdk_client_query_methods(aiki: Any) -> None:
    await register(aiki.http, (A, "1"))
    ids = [await start(aiki.http, A, "1", i) for i in range(3)]
    page = await aiki.client.list_runs(status="queued", limit="2")
    assert [r.id for r in page.items] == sorted(ids, reverse=True)[:2]
    assert page.next_cursor is not None
    rest = await aiki.client.list_runs(status="queued", limit="2", cursor=page.next_cursor)
    assert [r.id for r in rest.items] == [min(ids)]
    detail = await aiki.client.run_detail(ids[0])
    assert detail.run.id == ids[0]
    assert detail.tasks == []
    workflows = await aiki.client.list_workflows()
    assert [(w.name, w.run_counts) for w in workflows.items] == [(A, {"queued": 3})]
    workers = await aiki.client.list_workers()
    assert [w.id for w in workers.items] == ["registrar"]
    cancelled = await aiki.client.cancel_runs(CancelRunsRequest(workflow=A, reason="done"))
    assert cancelled.cancelled == sorted(ids, reverse=True)


async def test_queries_see_only_their_namespace(aiki: Any) -> None:
    await register(aiki.http, (A, "1"))
    run_id = await start(aiki.http, A, "1")
    await insert_child(aiki, run_id, C, "1")
    other = "00000000-0000-7000-8000-0000000000ff"
    async with aiki.server.db.autocommit() as conn:
        mine = QueryRepository(conn, DEFAULT_NAMESPACE_ID)
        theirs = QueryRepository(conn, other)
        assert len(await mine.page(RunFilter(), before_id=None, limit=10)) == 2
        assert await theirs.page(RunFilter(), before_id=None, limit=10) == []
        assert await theirs.live_ids(RunFilter(workflow=A), ["queued"], before_id=None, limit=10) == []
        assert await theirs.get_run(run_id) is None
        assert await theirs.children(run_id, 10) == []
        assert await theirs.history(run_id) == []
        assert await theirs.versions() == []
        assert await theirs.run_counts() == []
        assert await theirs.workers() == []
        assert await theirs.leased_counts() == {}
