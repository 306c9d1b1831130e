"""``POST /workers/commands`` and the local port's ``run_commands``: the executor's writes as typed
commands, applied per run in order (a refusal refuses the run's later commands), runs independently.
Both databases."""

from __future__ import annotations

from typing import Any

import pytest

from aiki import Run, workflow
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.protocol import ClaimRequest, RegisterWorkerRequest, VersionRef, VersionSpec

from .helpers import API, get_history, get_run, new_key

cmd_wf = workflow(name="commands-wf")


@cmd_wf.v("1.0.0")
async def cmd_v1(run: Run, value: str) -> str:
    return value


@pytest.fixture
def transport() -> str:
    """These tests speak the wire themselves: one transport is enough."""
    return "port"


async def _claimed(aiki: Any, count: int) -> list[p.Activation]:
    worker_id = f"commands-claimer-{new_key()}"
    await connect(aiki.client).register_worker(
        RegisterWorkerRequest(
            worker_id=worker_id, host="t", versions=[VersionSpec("commands-wf", "1.0.0", event_schemas={"go": None})]
        )
    )
    handles = [await cmd_v1.start(aiki.client, new_key()) for _ in range(count)]
    claim = await connect(aiki.client).claim(
        ClaimRequest(worker_id=worker_id, versions=[VersionRef("commands-wf", "1.0.0")], max_runs=count, wait_ms=5000)
    )
    assert sorted(a.run_id for a in claim.activations) == sorted(h.id for h in handles)
    return sorted(claim.activations, key=lambda a: [h.id for h in handles].index(a.run_id))


def _record(a: p.Activation, address: str = "step:x", output: Any = 1, **kw: Any) -> dict[str, Any]:
    body = {"kind": "record_task", "run_id": a.run_id, "revision": a.revision, "address": address, "seq": 0}
    return {**body, "name": "step", "status": "completed", "attempts": 1, "output": output, **kw}


def _cmd(kind: str, a: p.Activation, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "run_id": a.run_id, "revision": a.revision, **fields}


async def _send(aiki: Any, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await aiki.http.post(f"{API}/workers/commands", json={"commands": list(commands)})
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    assert len(results) == len(commands)
    return results


def _same(problem: dict[str, Any], refusal: dict[str, Any]) -> bool:
    """``problem`` repeats ``refusal`` (each names its own command's route as ``instance``)."""
    return {**problem, "instance": None} == {**refusal, "instance": None}


async def _tasks(aiki: Any, run_id: str) -> list[tuple[str, str]]:
    detail = (await aiki.http.get(f"{API}/runs/{run_id}/detail")).json()
    return [(t["address"], t["status"]) for t in detail["tasks"]]


async def test_a_run_s_commands_apply_in_order_and_a_record_fuses_with_its_ending(aiki: Any) -> None:
    [a] = await _claimed(aiki, 1)
    results = await _send(aiki, _record(a, "step:1"), _record(a, "step:2"), _cmd("complete", a, output="done"))
    assert results == [
        {"record": {"recorded": True}},
        {"record": {"recorded": True}},
        {"transition": {"status": "completed"}},
    ]
    assert sorted(await _tasks(aiki, a.run_id)) == [("step:1", "completed"), ("step:2", "completed")]
    run = await get_run(aiki.http, a.run_id)
    assert (run["status"], run["output"]) == ("completed", "done")


async def test_a_refusal_refuses_the_run_s_later_commands_only(aiki: Any) -> None:
    fresh, stale = await _claimed(aiki, 2)
    await aiki.http.post(f"{API}/runs/{stale.run_id}/cancel", json={})  # fences the claim's revision
    results = await _send(
        aiki,
        _record(stale, "step:1"),
        _record(fresh, "step:1"),
        _cmd("complete", stale, output="x"),
        _cmd("complete", fresh, output="y"),
    )
    stale_record, fresh_record, stale_complete, fresh_complete = results
    assert (stale_record["problem"]["status"], stale_record["problem"]["code"]) == (409, "stale_revision")
    assert stale_record["problem"]["instance"] == f"{API}/runs/{stale.run_id}/tasks"
    assert _same(stale_complete["problem"], stale_record["problem"])  # the same problem, not applied
    assert fresh_record == {"record": {"recorded": True}}
    assert fresh_complete == {"transition": {"status": "completed"}}
    assert await _tasks(aiki, stale.run_id) == []
    assert (await get_run(aiki.http, stale.run_id))["status"] == "cancelled"


async def test_a_conflicting_record_refuses_the_ending_it_precedes(aiki: Any) -> None:
    [a] = await _claimed(aiki, 1)
    assert await _send(aiki, _record(a, "step:1")) == [{"record": {"recorded": True}}]
    conflicting = _record(a, "step:1", status="failed", error={"type": "E", "message": "m"})
    record, complete = await _send(aiki, conflicting, _cmd("complete", a, output="x"))
    assert record["problem"]["code"] == "task_conflict"
    assert _same(complete["problem"], record["problem"])
    assert (await get_run(aiki.http, a.run_id))["status"] == "running"


async def test_an_oversized_command_is_refused_alone(aiki: Any) -> None:
    fresh, other = await _claimed(aiki, 2)
    too_big = _record(fresh, "step:big", output="x" * (70 * 1024))  # the harness allows 64 KiB a request
    big, after, elsewhere = await _send(aiki, too_big, _cmd("complete", fresh), _record(other))
    assert (big["problem"]["status"], big["problem"]["code"]) == (413, "payload_too_large")
    assert _same(after["problem"], big["problem"])
    assert elsewhere == {"record": {"recorded": True}}
    assert (await get_run(aiki.http, fresh.run_id))["status"] == "running"


async def test_a_stale_command_is_the_same_problem_as_its_single_route(aiki: Any) -> None:
    [a] = await _claimed(aiki, 1)
    await aiki.http.post(f"{API}/runs/{a.run_id}/cancel", json={})
    alone = await aiki.http.post(f"{API}/runs/{a.run_id}/transition", json={"revision": a.revision, "kind": "fail"})
    [batched] = await _send(aiki, _cmd("fail", a))
    assert alone.status_code == 409
    assert batched["problem"] == alone.json()


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({"kind": "sleep", "run_id": "r", "revision": 1, "seq": 0}, "name"),
        ({"kind": "await_event", "run_id": "r", "revision": 1, "wait_seq": 0, "consumed": 0}, "event"),
        ({"kind": "complete", "revision": 1}, "run_id"),
    ],
)
async def test_a_bad_command_is_refused_naming_its_field(aiki: Any, command: dict[str, Any], field: str) -> None:
    ok = {"kind": "complete", "run_id": "r", "revision": 1}
    resp = await aiki.http.post(f"{API}/workers/commands", json={"commands": [ok, command]})
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert (problem["code"], problem["field"]) == ("validation_error", "$.commands[1]")
    assert f"`{field}`" in problem["detail"]


@pytest.mark.parametrize("count", [0, 257])
async def test_a_batch_holds_one_to_256_commands(aiki: Any, count: int) -> None:
    command = {"kind": "complete", "run_id": "r", "revision": 1}
    resp = await aiki.http.post(f"{API}/workers/commands", json={"commands": [command] * count})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "$.commands"


async def test_an_unknown_command_is_refused_naming_it(aiki: Any) -> None:
    resp = await aiki.http.post(f"{API}/workers/commands", json={"commands": [{"kind": "drop", "run_id": "r"}]})
    assert resp.status_code == 422, resp.text
    assert "drop" in resp.json()["detail"]


async def test_fail_retry_and_task_retry(aiki: Any) -> None:
    failing, retrying, waiting = await _claimed(aiki, 3)
    error = {"type": "Boom", "message": "boom"}
    results = await _send(
        aiki,
        _cmd("fail", failing, error=error),
        _cmd("retry", retrying, error=error, wake_at=1),
        _record(waiting, status="awaiting_retry", output=None, next_attempt_at=1),
        _cmd("await_task_retry", waiting, wake_at=1),
    )
    statuses = [r.get("transition", {}).get("status") for r in results]
    assert statuses == ["failed", "awaiting_retry", None, "awaiting_retry"]
    assert results[2] == {"record": {"recorded": True}}
    assert (await get_run(aiki.http, failing.run_id))["error"]["message"] == "boom"
    assert (await get_run(aiki.http, retrying.run_id))["attempt"] == 2
    assert await _tasks(aiki, waiting.run_id) == [("step:x", "awaiting_retry")]


async def test_sleep_held_and_resumed(aiki: Any) -> None:
    suspended, held = await _claimed(aiki, 2)
    results = await _send(
        aiki,
        _cmd("sleep", suspended, name="nap", seq=0, duration_ms=60_000),
        _cmd("sleep", held, name="nap", seq=0, duration_ms=10, hold=True),
    )
    assert results[0] == {"transition": {"status": "sleeping"}}
    assert results[1] == {
        "transition": {"status": "sleeping", "suspended": False, "held": True, "revision": held.revision}
    }
    [resumed] = await _send(aiki, _cmd("resume_sleep", held, name="nap", seq=0))
    assert resumed == {"transition": {"status": "running", "suspended": False, "revision": held.revision}}
    history = await get_history(aiki.http, held.run_id)
    assert [h["to_status"] for h in history][-2:] == ["sleeping", "running"]


async def test_await_event_suspends_or_answers_buffered_events(aiki: Any) -> None:
    waiting, buffered = await _claimed(aiki, 2)
    await aiki.client.send_event(buffered.run_id, "go", p.SendEventRequest(data=7))
    first, second = await _send(
        aiki,
        _cmd("await_event", waiting, event="go", wait_seq=0, consumed=0, timeout_ms=60_000),
        _cmd("await_event", buffered, event="go", wait_seq=0, consumed=0),
    )
    assert first == {"transition": {"status": "awaiting_event"}}
    assert second["transition"]["suspended"] is False
    assert [e["data"] for e in second["transition"]["events"]] == [7]


async def test_start_child_then_await_it(aiki: Any) -> None:
    [parent] = await _claimed(aiki, 1)
    start = _cmd("start_child", parent, address="child:a", seq=0, workflow="commands-wf", version="1.0.0", input="c")
    [started, again] = await _send(aiki, start, start)
    assert started["child"]["created"] is True
    assert again["child"] == {**started["child"], "created": False}
    child_id = started["child"]["child"]["run_id"]
    [waited] = await _send(aiki, _cmd("await_child", parent, child_run_id=child_id, wait_seq=0))
    assert waited == {"transition": {"status": "awaiting_child"}}


async def test_yield_releases_a_paused_run(aiki: Any) -> None:
    running, pausing = await _claimed(aiki, 2)
    paused = await aiki.http.post(f"{API}/runs/{pausing.run_id}/pause", json={})
    assert paused.status_code == 200, paused.text
    on, released = await _send(aiki, _cmd("yield", running), _cmd("yield", pausing))
    assert on == {"transition": {"status": "running", "suspended": False, "revision": running.revision}}
    assert released == {"transition": {"status": "paused"}}


async def test_the_local_port_answers_commands_like_the_route(aiki: Any) -> None:
    fresh, stale = await _claimed(aiki, 2)
    await aiki.http.post(f"{API}/runs/{stale.run_id}/cancel", json={})
    port = aiki.handler.state.aiki_local_port
    commands: list[p.Command] = [
        p.RecordTask(
            run_id=fresh.run_id,
            revision=fresh.revision,
            address="s:1",
            seq=0,
            name="s",
            status="completed",
            attempts=1,
            output=1,
        ),
        p.Complete(run_id=fresh.run_id, revision=fresh.revision, output="ok"),
        p.Complete(run_id=stale.run_id, revision=stale.revision, output="no"),
    ]
    record, complete, refused = await port.run_commands(commands)
    assert record == p.CommandResult(record=p.RecordTaskResponse(recorded=True))
    assert complete == p.CommandResult(transition=p.TransitionResponse(status="completed"))
    assert refused.problem is not None
    assert (refused.problem.status, refused.problem.code) == (409, "stale_revision")
    assert (await get_run(aiki.http, fresh.run_id))["status"] == "completed"


async def test_a_record_and_its_ending_are_one_write_on_postgres(aiki: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the record rides with the ending in one statement; on SQLite the same batch
    takes the transactional path with the same answers."""
    if aiki.db != "postgres":
        [a] = await _claimed(aiki, 1)
        results = await _send(aiki, _record(a, "step:1"), _cmd("complete", a, output="done"))
        assert results == [{"record": {"recorded": True}}, {"transition": {"status": "completed"}}]
        assert await _tasks(aiki, a.run_id) == [("step:1", "completed")]
        return
    from aiki.platform.db.postgres.executor import PostgresExecutorStore

    alone: list[str] = []
    finished: list[bool] = []
    record, finish = PostgresExecutorStore.record_task, PostgresExecutorStore.finish

    async def spy_record(self: Any, run_id: str, *args: Any) -> Any:
        alone.append(run_id)
        return await record(self, run_id, *args)

    async def spy_finish(self: Any, *args: Any) -> Any:
        row = await finish(self, *args)
        finished.append(row is not None and args[-1] is not None)
        return row

    monkeypatch.setattr(PostgresExecutorStore, "record_task", spy_record)
    monkeypatch.setattr(PostgresExecutorStore, "finish", spy_finish)
    [a] = await _claimed(aiki, 1)
    results = await _send(aiki, _record(a, "step:1"), _cmd("complete", a, output="done"))
    assert results == [{"record": {"recorded": True}}, {"transition": {"status": "completed"}}]
    assert (alone, finished) == ([], [True])  # no separate record: the record rode with the ending
    assert await _tasks(aiki, a.run_id) == [("step:1", "completed")]


async def test_the_transition_route_names_the_field_its_kind_needs(aiki: Any) -> None:
    [a] = await _claimed(aiki, 1)
    resp = await aiki.http.post(
        f"{API}/runs/{a.run_id}/transition", json={"revision": a.revision, "kind": "sleep", "sleep_seq": 0}
    )
    assert resp.status_code == 422, resp.text
    assert (resp.json()["code"], resp.json()["field"]) == ("validation_error", "$.sleep_name")
    resp = await aiki.http.post(
        f"{API}/runs/{a.run_id}/transition", json={"revision": a.revision, "kind": "await_child", "wait_seq": 0}
    )
    assert resp.json()["field"] == "$.child_run_id"
    assert (await get_run(aiki.http, a.run_id))["status"] == "running"


async def test_a_transition_with_its_task_is_refused_whole_when_the_task_is(aiki: Any) -> None:
    [a] = await _claimed(aiki, 1)
    await aiki.http.post(
        f"{API}/runs/{a.run_id}/tasks", json={k: v for k, v in _record(a).items() if k not in ("kind", "run_id")}
    )
    conflicting = {**_record(a), "status": "failed", "error": {"type": "E", "message": "m"}}
    task = {k: v for k, v in conflicting.items() if k not in ("kind", "run_id")}
    resp = await aiki.http.post(
        f"{API}/runs/{a.run_id}/transition", json={"revision": a.revision, "kind": "complete", "task": task}
    )
    assert (resp.status_code, resp.json()["code"]) == (409, "task_conflict")
    assert (await get_run(aiki.http, a.run_id))["status"] == "running"
