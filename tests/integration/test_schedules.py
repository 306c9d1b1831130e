"""Schedules (SPEC §2 "Schedules"): cron in a time zone, intervals, overlap policies, catch-up,
pause/resume/delete and identity, on a fake clock.

The services' clock is replaced by a :class:`FakeClock`; both the server's schedule loop and the
direct ``fire_due`` calls read it. After moving the clock a test calls ``fire_due`` and then waits
until the schedule has moved past that time, so it does not matter whether the loop or the call
fired an occurrence.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from aiki import (
    NotFoundError,
    ReferenceConflictError,
    Run,
    ValidationError,
    WorkflowNotFoundError,
    schedule,
    workflow,
)
from aiki.platform.domain.errors import ScheduleNotFound
from aiki.platform.domain.schedules import occurrence_key
from aiki.platform.runtime.schedule_loop import PASS_KEY
from aiki.platform.services import schedules as schedule_service
from aiki.platform.services.schedules import WAKE_KEY
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import RegisterWorkerRequest, ScheduleView, VersionSpec
from aiki.worker_sdk.schedules import ScheduleHandle, list_schedules

from .helpers import API, WAIT, get_history, get_run, new_key

HOUR = 3_600_000
MINUTE = 60_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# A version no worker executes: its runs stay queued (live), which is what the overlap tests need.
idle_wf = workflow(name="sched-idle")


@idle_wf.v("1.0.0")
async def idle_v1(run: Run, input: dict[str, Any]) -> None:  # pragma: no cover - never executed
    return None


echo_wf = workflow(name="sched-echo")


@echo_wf.v("1.0.0")
async def echo_v1(run: Run, input: dict[str, str]) -> str:
    return input["key"]


async def register_idle(aiki: Any) -> None:
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(
            worker_id=new_key("registrar"), host="test", versions=[VersionSpec(workflow="sched-idle", version="1.0.0")]
        )
    )


async def fake_clock(aiki: Any, start: str) -> FakeClock:
    """Put the services on a fake clock, once the running schedule loop can no longer use the real one.

    A loop pass already in flight read the real clock (later than every fake time here): it could
    fire a schedule activated meanwhile at the real time. Two completed passes after the swap
    guarantee the in-flight one has ended.
    """
    clock = FakeClock(ms(start))
    svc = aiki.server.services
    svc.clock = clock
    for _ in range(2):
        since = svc.hub.version(PASS_KEY)
        svc.hub.notify(WAKE_KEY)
        assert await svc.hub.wait(PASS_KEY, since, WAIT.total_seconds()), "the schedule loop is not running"
    return clock


async def advance(aiki: Any, clock: FakeClock, to: int, handle: ScheduleHandle) -> ScheduleView:
    """Move the clock to ``to``, fire, and wait until the schedule has handled everything due by then."""
    clock.now = to
    await schedule_service.fire_due(aiki.server.services, to)
    deadline = time.monotonic() + WAIT.total_seconds()
    while True:
        view = await handle.describe()
        if view.next_fire_at is None or view.next_fire_at > to:
            return view
        assert time.monotonic() < deadline, f"schedule still due at {to}: {view}"
        await asyncio.sleep(0.02)


async def schedule_runs(aiki: Any, schedule_id: str) -> list[dict[str, Any]]:
    """Runs started by the schedule, oldest occurrence first."""
    prefix = f"schedule:{schedule_id}:"
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        resp = await aiki.http.get(f"{API}/runs", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        runs += [r for r in body["items"] if (r.get("reference_id") or "").startswith(prefix)]
        cursor = body.get("next_cursor")
        if not cursor:
            return sorted(runs, key=lambda r: r["reference_id"])


def occurrence_keys(runs: list[dict[str, Any]], schedule_id: str) -> list[str]:
    prefix = f"schedule:{schedule_id}:"
    return [r["reference_id"][len(prefix) :] for r in runs]


# -- cron across daylight-saving changes ---------------------------------------------------------

DST_CASES = [
    pytest.param(
        "30 2 * * *",
        "2026-03-27T12:00:00Z",
        # 02:30 does not exist on 2026-03-29: it fires when the gap ends (03:00 CEST = 01:00 UTC).
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        id="spring-forward-nonexistent-time",
    ),
    pytest.param(
        "30 2 * * *",
        "2026-10-23T12:00:00Z",
        # 02:30 happens twice on 2026-10-25: it fires once, at the first (CEST, 00:30 UTC).
        ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        id="fall-back-ambiguous-time",
    ),
    pytest.param(
        "0 9 * * *",
        "2026-03-27T12:00:00Z",
        # 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"],
        id="daily-across-spring-forward",
    ),
]


@pytest.mark.parametrize(("cron", "start", "expected"), DST_CASES)
async def test_cron_in_a_time_zone_fires_at_the_wall_clock_times_across_dst(
    aiki: Any, cron: str, start: str, expected: list[str]
) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, start)
    handle = await schedule(cron=cron, timezone="Europe/Berlin", overlap="allow").activate(
        aiki.client, idle_v1, {"k": new_key()}
    )
    # Step the clock in 10-minute steps over three days; note when each run appeared.
    first_seen: dict[str, int] = {}
    t = clock.now
    end = clock.now + 3 * 24 * HOUR
    while t < end:
        t += 10 * MINUTE
        view = await advance(aiki, clock, t, handle)
        for key in occurrence_keys(await schedule_runs(aiki, handle.id), handle.id):
            first_seen.setdefault(key, t)
        if view.next_fire_at is not None and view.next_fire_at > t + 10 * MINUTE:
            t = view.next_fire_at - 10 * MINUTE  # nothing due before then: skip ahead
    assert list(first_seen) == expected
    for key, seen in first_seen.items():
        # Fired at the first clock step at or after the occurrence, not earlier or later.
        assert ms(key) <= seen < ms(key) + 10 * MINUTE, (key, seen)
    runs = await schedule_runs(aiki, handle.id)
    assert all(r["status"] == "queued" and r["workflow"] == "sched-idle" for r in runs)


# -- intervals -------------------------------------------------------------------------------------


async def test_interval_schedule_starts_a_run_per_occurrence_that_workers_execute(aiki: Any) -> None:
    await aiki.worker([echo_v1])
    clock = await fake_clock(aiki, "2026-05-01T10:17:00Z")
    key = new_key()
    handle = await schedule(every=timedelta(hours=1)).activate(aiki.client, echo_v1, {"key": key})
    assert handle.created
    view = await handle.describe()
    assert view.next_fire_at == ms("2026-05-01T11:00:00Z")  # aligned to the hour, UTC
    assert (view.every_ms, view.overlap, view.status) == (HOUR, "skip", "active")

    for hour in (11, 12, 13):
        now = ms(f"2026-05-01T{hour}:00:05Z")
        await advance(aiki, clock, now, handle)
        runs = await schedule_runs(aiki, handle.id)
        assert occurrence_keys(runs, handle.id)[-1] == f"2026-05-01T{hour}:00:00Z"
        # The previous run must finish before the next occurrence (overlap "skip").
        finished = await aiki.client.get_run(runs[-1]["id"], wait_for=["completed"], timeout_ms=20_000)
        assert finished.status == "completed"
        assert msgspec.json.decode(finished.output) == key

    runs = await schedule_runs(aiki, handle.id)
    assert occurrence_keys(runs, handle.id) == [f"2026-05-01T{h}:00:00Z" for h in (11, 12, 13)]
    history = await get_history(aiki.http, runs[0]["id"])
    assert handle.id in (history[0].get("reason") or "")


async def test_the_schedule_loop_fires_on_its_own(aiki: Any) -> None:
    """No direct fire_due call: the runtime's loop reads the (fake) clock and starts the run."""
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1)).activate(aiki.client, idle_v1, {"k": new_key()})
    clock.now = ms("2026-05-01T10:01:00Z")
    deadline = time.monotonic() + WAIT.total_seconds()
    while not await schedule_runs(aiki, handle.id):
        assert time.monotonic() < deadline, "the schedule loop did not fire"
        await asyncio.sleep(0.05)
    assert occurrence_keys(await schedule_runs(aiki, handle.id), handle.id) == ["2026-05-01T10:01:00Z"]


# -- overlap policies ------------------------------------------------------------------------------


async def test_skip_starts_nothing_while_the_previous_run_is_live(aiki: Any) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1), overlap="skip").activate(aiki.client, idle_v1, {"k": "x"})

    await advance(aiki, clock, ms("2026-05-01T10:01:00Z"), handle)
    first = await schedule_runs(aiki, handle.id)
    assert len(first) == 1

    # The first run is still queued (live): the next two occurrences start nothing.
    await advance(aiki, clock, ms("2026-05-01T10:02:00Z"), handle)
    view = await advance(aiki, clock, ms("2026-05-01T10:03:00Z"), handle)
    assert [r["id"] for r in await schedule_runs(aiki, handle.id)] == [first[0]["id"]]
    assert view.last_run_id == first[0]["id"]
    assert view.next_fire_at == ms("2026-05-01T10:04:00Z")

    # Once it ended, the next occurrence starts a run again.
    await aiki.client.cancel_run(first[0]["id"], "done with it")
    await advance(aiki, clock, ms("2026-05-01T10:04:00Z"), handle)
    runs = await schedule_runs(aiki, handle.id)
    assert occurrence_keys(runs, handle.id) == ["2026-05-01T10:01:00Z", "2026-05-01T10:04:00Z"]


async def test_cancel_previous_cancels_the_live_run_then_starts_the_new_one(aiki: Any) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1), overlap="cancel_previous").activate(
        aiki.client, idle_v1, {"k": "x"}
    )
    await advance(aiki, clock, ms("2026-05-01T10:01:00Z"), handle)
    view = await advance(aiki, clock, ms("2026-05-01T10:02:00Z"), handle)

    runs = await schedule_runs(aiki, handle.id)
    assert occurrence_keys(runs, handle.id) == ["2026-05-01T10:01:00Z", "2026-05-01T10:02:00Z"]
    old, new = await get_run(aiki.http, runs[0]["id"]), await get_run(aiki.http, runs[1]["id"])
    assert old["status"] == "cancelled"
    assert new["status"] == "queued"
    assert view.last_run_id == new["id"]
    old_history = await get_history(aiki.http, old["id"])
    new_history = await get_history(aiki.http, new["id"])
    assert old_history[-1]["to_status"] == "cancelled"
    assert "superseded by schedule" in (old_history[-1].get("reason") or "")
    # Cancel first, then start: history ids are assigned in commit order.
    assert old_history[-1]["id"] < new_history[0]["id"]

    # A previous run that already ended is left alone.
    await aiki.client.cancel_run(new["id"])
    await advance(aiki, clock, ms("2026-05-01T10:03:00Z"), handle)
    runs = await schedule_runs(aiki, handle.id)
    assert [r["status"] for r in runs] == ["cancelled", "cancelled", "queued"]


async def test_allow_starts_a_run_for_every_missed_occurrence(aiki: Any) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1), overlap="allow").activate(aiki.client, idle_v1, {"k": "x"})
    # Downtime: nothing fired for two hours and ten and a half minutes (130 occurrences).
    await advance(aiki, clock, ms("2026-05-01T12:10:59Z"), handle)
    runs = await schedule_runs(aiki, handle.id)
    expected = [ms("2026-05-01T10:01:00Z") + i * MINUTE for i in range(130)]
    assert occurrence_keys(runs, handle.id) == [occurrence_key(t) for t in expected]
    assert all(r["status"] == "queued" for r in runs)  # all live at once: "allow" does not care


@pytest.mark.parametrize("overlap", ["skip", "cancel_previous"])
async def test_skip_and_cancel_previous_catch_up_only_the_latest_missed_occurrence(aiki: Any, overlap: str) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1), overlap=overlap).activate(  # type: ignore[arg-type]
        aiki.client, idle_v1, {"k": "x"}
    )
    view = await advance(aiki, clock, ms("2026-05-01T10:30:10Z"), handle)
    runs = await schedule_runs(aiki, handle.id)
    assert occurrence_keys(runs, handle.id) == ["2026-05-01T10:30:00Z"]
    assert view.next_fire_at == ms("2026-05-01T10:31:00Z")


# -- pause, resume, delete -------------------------------------------------------------------------


async def test_pause_resume_and_delete(aiki: Any) -> None:
    await register_idle(aiki)
    clock = await fake_clock(aiki, "2026-05-01T10:00:30Z")
    handle = await schedule(every=timedelta(minutes=1), overlap="allow").activate(aiki.client, idle_v1, {"k": "x"})
    await advance(aiki, clock, ms("2026-05-01T10:01:00Z"), handle)

    paused = await handle.pause()
    assert (paused.status, paused.next_fire_at) == ("paused", None)
    assert (await handle.pause()).status == "paused"  # idempotent
    clock.now = ms("2026-05-01T10:10:00Z")
    await schedule_service.fire_due(aiki.server.services, clock.now)
    assert len(await schedule_runs(aiki, handle.id)) == 1
    listed = await list_schedules(aiki.client, status="paused")
    assert handle.id in [s.id for s in listed.items]

    # Resuming fires from the next occurrence after now: the paused period is not caught up.
    resumed = await handle.resume()
    assert (resumed.status, resumed.next_fire_at) == ("active", ms("2026-05-01T10:11:00Z"))
    await advance(aiki, clock, ms("2026-05-01T10:11:00Z"), handle)
    runs = await schedule_runs(aiki, handle.id)
    assert occurrence_keys(runs, handle.id) == ["2026-05-01T10:01:00Z", "2026-05-01T10:11:00Z"]

    deleted = await handle.delete()
    assert deleted.id == handle.id
    with pytest.raises(NotFoundError):
        await handle.describe()
    with pytest.raises(NotFoundError):
        await handle.delete()
    resp = await aiki.http.get(f"{API}/schedules/{handle.id}")
    assert (resp.status_code, resp.json()["code"]) == (404, "schedule_not_found")
    clock.now = ms("2026-05-01T10:20:00Z")
    await schedule_service.fire_due(aiki.server.services, clock.now)
    # Runs it started stay; no new ones.
    assert len(await schedule_runs(aiki, handle.id)) == 2


# -- identity and validation -----------------------------------------------------------------------


async def test_activating_the_same_definition_twice_returns_the_same_schedule(aiki: Any) -> None:
    await register_idle(aiki)
    await fake_clock(aiki, "2026-05-01T10:00:30Z")
    rule = schedule(cron="0 9 * * *", timezone="Europe/Berlin", overlap="skip")
    first = await rule.activate(aiki.client, idle_v1, {"team": "ops"})
    again = await schedule(cron="0  9 * * *", timezone="Europe/Berlin").activate(aiki.client, idle_v1, {"team": "ops"})
    assert first.created
    assert not again.created
    assert again.id == first.id

    other_input = await rule.activate(aiki.client, idle_v1, {"team": "sales"})
    other_policy = await schedule(cron="0 9 * * *", timezone="Europe/Berlin", overlap="allow").activate(
        aiki.client, idle_v1, {"team": "ops"}
    )
    other_zone = await schedule(cron="0 9 * * *", timezone="Europe/Paris").activate(
        aiki.client, idle_v1, {"team": "ops"}
    )
    assert len({first.id, other_input.id, other_policy.id, other_zone.id}) == 4

    # A paused schedule stays paused when the same definition is activated again (e.g. on deploy).
    await first.pause()
    assert (await (await rule.activate(aiki.client, idle_v1, {"team": "ops"})).describe()).status == "paused"

    # Over HTTP: 201 when created, 200 when found.
    body = {"workflow": "sched-idle", "version": "1.0.0", "input": {"team": "ops"}, "cron": "0 9 * * *"}
    body["timezone"] = "Europe/Berlin"
    resp = await aiki.http.post(f"{API}/schedules", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["schedule"]["id"] == first.id


async def test_an_explicit_reference_id_is_the_identity(aiki: Any) -> None:
    await register_idle(aiki)
    await fake_clock(aiki, "2026-05-01T10:00:30Z")
    ref = new_key("nightly")
    a = await schedule(cron="0 2 * * *").activate(aiki.client, idle_v1, {"k": 1}, reference_id=ref)
    b = await schedule(cron="0 2 * * *").activate(aiki.client, idle_v1, {"k": 1}, reference_id=ref)
    assert a.id == b.id
    assert a.created
    assert not b.created
    assert (await a.describe()).reference_id == ref
    with pytest.raises(ReferenceConflictError):
        await schedule(cron="0 3 * * *").activate(aiki.client, idle_v1, {"k": 1}, reference_id=ref)
    # Without the reference the same rule is a different schedule.
    c = await schedule(cron="0 2 * * *").activate(aiki.client, idle_v1, {"k": 1})
    assert c.id != a.id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "0 9 * *"}, "$.cron"),
        ({"cron": "0 0 30 2 *"}, "$.cron"),
        ({"cron": "0 9 * * *", "timezone": "Europe/Atlantis"}, "$.timezone"),
        ({"every_ms": 10}, "$.every_ms"),
        ({}, "$.cron"),
        ({"cron": "0 9 * * *", "every_ms": 60_000}, "$.cron"),
        ({"cron": "0 9 * * *", "overlap": "queue"}, "$.overlap"),
    ],
)
async def test_bad_rules_are_refused_with_the_field_named(aiki: Any, body: dict[str, Any], field: str) -> None:
    await register_idle(aiki)
    resp = await aiki.http.post(f"{API}/schedules", json={"workflow": "sched-idle", "version": "1.0.0", **body})
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert problem["code"] == "validation_error"
    assert problem["field"] == field, problem
    listed = await aiki.http.get(f"{API}/schedules")
    assert listed.json()["items"] == []


async def test_sdk_checks_rules_and_input_before_sending(aiki: Any) -> None:
    with pytest.raises(ValidationError):
        schedule()
    with pytest.raises(ValidationError):
        schedule(cron="0 9 * * *", every=timedelta(hours=1))
    with pytest.raises(ValidationError):
        schedule(every=timedelta(0))
    with pytest.raises(ValidationError):
        schedule(cron="0 9 * * *", overlap="never")  # type: ignore[arg-type]
    await aiki.worker([echo_v1])
    with pytest.raises(ValidationError):
        await schedule(cron="0 9 * * *").activate(aiki.client, echo_v1, {"key": 5})  # type: ignore[dict-item]
    with pytest.raises(ValidationError) as info:
        await schedule(cron="0 9 * * * *").activate(aiki.client, echo_v1, {"key": "x"})
    assert info.value.field == "$.cron"
    unknown = workflow(name="sched-unknown")

    @unknown.v("1.0.0")
    async def unknown_v1(run: Run) -> None:  # pragma: no cover - never executed
        return None

    with pytest.raises(WorkflowNotFoundError):
        await schedule(cron="0 9 * * *").activate(aiki.client, unknown_v1)


async def test_schedules_are_scoped_to_their_namespace(aiki: Any) -> None:
    await register_idle(aiki)
    handle = await schedule(cron="0 9 * * *").activate(aiki.client, idle_v1, {"k": new_key()})
    svc = aiki.server.services
    other = "00000000-0000-7000-8000-00000000beef"
    for call in (
        schedule_service.get_schedule(svc, other, handle.id),
        schedule_service.pause_schedule(svc, other, handle.id),
        schedule_service.resume_schedule(svc, other, handle.id),
        schedule_service.delete_schedule(svc, other, handle.id),
    ):
        with pytest.raises(ScheduleNotFound):
            await call
    assert (await schedule_service.list_schedules(svc, other)).items == []
    assert (await handle.describe()).status == "active"
