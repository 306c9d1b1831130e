"""Domain values to wire types (``aiki.api.wire``): the JSON is what the services' wire Structs
used to be, payloads pass through undecoded, defaults are omitted as before."""

from __future__ import annotations

import msgspec

from aiki.api import wire, wire_reads
from aiki.platform.domain import inspection as i
from aiki.platform.domain import values as v

_RUN = v.Run(
    id="r1",
    workflow="wf",
    version="1",
    status="completed",
    revision=2,
    attempt=1,
    created_at=10,
    updated_at=20,
    input='{"b": 2, "a": [1]}',
    output=None,
    error=v.Failure(type="Boom", message="m", cause="timeout"),
    reference_id=None,
    parent_run_id=None,
    pool=None,
    recoveries=0,
    wake_at=None,
    finished_at=20,
)


def test_a_run_keeps_its_payloads_as_stored_and_omits_defaults() -> None:
    assert msgspec.json.encode(wire.run_view(_RUN)) == (
        b'{"id":"r1","workflow":"wf","version":"1","status":"completed","revision":2,"attempt":1,'
        b'"created_at":10,"updated_at":20,"input":{"b": 2, "a": [1]},"output":null,'
        b'"error":{"type":"Boom","message":"m","cause":"timeout"},"finished_at":20}'
    )


def test_transition_answers_omit_their_defaults() -> None:
    assert msgspec.json.encode(wire.transitioned(v.Transitioned(status="sleeping"))) == b'{"status":"sleeping"}'
    event = v.EventEntry(id="e1", name="go", seq=0, data="[1]", reference_id=None)
    child = v.ChildEntry("a", 0, "c1", "wf", "1", "completed", "7", None)
    goes_on = v.Transitioned(status="running", suspended=False, events=[event], revision=3, child=child)
    assert msgspec.json.encode(wire.transitioned(goes_on)) == (
        b'{"status":"running","suspended":false,"events":[{"id":"e1","name":"go","seq":0,"data":[1]}],'
        b'"revision":3,"child":{"address":"a","seq":0,"run_id":"c1","workflow":"wf","version":"1",'
        b'"status":"completed","output":7}}'
    )
    assert msgspec.json.encode(wire.task_recorded(v.TaskRecorded(recorded=True))) == b'{"recorded":true}'
    assert msgspec.json.encode(wire.child_started(v.ChildStarted(paused=True))) == (
        b'{"child":null,"created":false,"paused":true}'
    )


def test_an_activation_carries_its_state_and_the_stored_retry_policy() -> None:
    task = v.TaskEntry("f", 0, "t", "completed", 1, '"x"', None, None)
    activation = v.Activation(
        run_id="r1",
        revision=1,
        workflow="wf",
        version="1",
        attempt=1,
        input="{}",
        lease_ttl_ms=30_000,
        tasks=[task],
        events=[],
        sleeps=[v.SleepEntry("s", 0, "completed", 5)],
        wait_timeouts=[],
        retry='{"kind":"fixed","max_attempts":3}',
        reference_id=None,
        children=[],
        deadline_at=None,
        resumed_wait=v.WaitRef("go", 1),
    )
    assert msgspec.json.encode(wire.claimed([activation])) == (
        b'{"activations":[{"run_id":"r1","revision":1,"workflow":"wf","version":"1","attempt":1,"input":{},'
        b'"lease_ttl_ms":30000,"tasks":[{"address":"f","seq":0,"name":"t","status":"completed","attempts":1,'
        b'"output":"x"}],"sleeps":[{"name":"s","seq":0,"status":"completed","wake_at":5}],'
        b'"retry":{"kind":"fixed","max_attempts":3},"resumed_wait":{"name":"go","seq":1}}]}'
    )
    assert msgspec.json.encode(wire.watch(v.HeldRuns(stale=[], paused=[]))) == b"{}"
    assert msgspec.json.encode(wire.heartbeat(v.HeldRuns(stale=[], paused=[]))) == b'{"stale":[],"paused":[]}'


def test_read_side_values_map_like_the_run() -> None:
    page = wire_reads.run_page(i.RunPage(items=[_RUN], next_cursor=None))
    assert msgspec.json.encode(page) == b'{"items":[' + msgspec.json.encode(wire.run_view(_RUN)) + b"]}"
    worker = i.WorkerInfo("w1", "h", [i.ServedVersion("wf", "1")], ["default"], 2, 1, 2, 0, "active", None)
    assert msgspec.json.encode(wire_reads.workers([worker])) == (
        b'{"items":[{"id":"w1","host":"h","versions":[{"workflow":"wf","version":"1"}],"pools":["default"],'
        b'"concurrency":2,"started_at":1,"last_heartbeat_at":2,"in_flight":0,"status":"active"}]}'
    )
