"""The worker loop against a scripted fake server."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx

from aiki.worker_sdk import Run, event, task, worker, workflow
from aiki.worker_sdk.client import client


@task(name="echo")
async def echo(s: str) -> str:
    return s


wf = workflow("worker-test")


@wf.v("1", events={"go": event(int)})
async def quick(run: Run, s: str) -> str:
    return await echo.start(run, s)


hang_started: list[str] = []


@wf.v("hang")
async def hang(run: Run) -> None:
    hang_started.append(run.id)
    await asyncio.sleep(3600)


def activation(run_id: str, version: str, input: Any = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "revision": 1,
        "workflow": "worker-test",
        "version": version,
        "attempt": 1,
        "input": input,
        "lease_ttl_ms": 30000,
    }


class Script:
    def __init__(self, batches: list[list[dict[str, Any]]], stale: list[str] | None = None) -> None:
        self.batches = batches
        self.stale = stale or []
        self.requests: list[tuple[str, Any]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        body = json.loads(request.content) if request.content else None
        self.requests.append((path, body))
        if path == "/workers/register":
            return httpx.Response(200, json={"worker_id": "w-1", "lease_ttl_ms": 30000, "heartbeat_interval_ms": 20})
        if path == "/workers/claim":
            if self.batches:
                return httpx.Response(200, json={"activations": self.batches.pop(0)})
            await asyncio.sleep(body["wait_ms"] / 1000)
            return httpx.Response(200, json={"activations": []})
        if path == "/workers/heartbeat":
            ids = {r[0] for r in body["runs"]}
            return httpx.Response(200, json={"stale": [r for r in self.stale if r in ids]})
        if path == "/workers/commands":
            return httpx.Response(200, json={"results": [self.answer(c) for c in body["commands"]]})
        return httpx.Response(404)

    @staticmethod
    def answer(command: dict[str, Any]) -> dict[str, Any]:
        if command["kind"] == "record_task":
            return {"record": {"recorded": True}}
        return {"transition": {"status": "completed", "suspended": True}}

    def paths(self, suffix: str) -> list[Any]:
        return [b for p, b in self.requests if p.endswith(suffix)]

    def transitions(self) -> list[Any]:
        """The transition commands sent."""
        commands = [c for p, b in self.requests if p == "/workers/commands" for c in b["commands"]]
        return [c for c in commands if c["kind"] != "record_task"]


async def test_worker_registers_claims_executes_and_stops() -> None:
    script = Script([[activation("r1", "1", "hi"), activation("r2", "1", "yo")]])
    c = client(transport=httpx.MockTransport(script.handle))
    handle = await worker([quick, hang], concurrency=4).spawn(c)
    assert handle.worker_id == "w-1"
    [register] = script.paths("/workers/register")
    specs = {v["version"]: v for v in register["versions"]}
    assert specs["1"]["input_schema"] == {"type": "string"}
    assert specs["1"]["event_schemas"] == {"go": {"type": "integer"}}
    assert "input_schema" not in specs["hang"]
    for _ in range(100):
        if len(script.transitions()) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(t["output"] for t in script.transitions()) == ["hi", "yo"]
    assert script.paths("/workers/claim")[0]["max_runs"] == 4
    await handle.stop()
    assert handle.in_flight == 0
    await c.close()


async def test_stale_heartbeat_cancels_execution_without_writes() -> None:
    script = Script([[activation("r3", "hang")]], stale=["r3"])
    c = client(transport=httpx.MockTransport(script.handle))
    handle = await worker([hang], concurrency=1).spawn(c)
    for _ in range(100):
        if "r3" in hang_started and handle.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert handle.in_flight == 0
    assert script.transitions() == []
    await handle.stop(grace=timedelta(seconds=1))
    await c.close()


async def test_stop_cancels_after_grace() -> None:
    script = Script([[activation("r4", "hang")]])
    c = client(transport=httpx.MockTransport(script.handle))
    handle = await worker([hang], concurrency=1).spawn(c)
    for _ in range(100):
        if handle.in_flight == 1:
            break
        await asyncio.sleep(0.01)
    assert handle.in_flight == 1
    await asyncio.wait_for(handle.stop(grace=timedelta(milliseconds=50)), timeout=5)
    assert handle.in_flight == 0
    assert script.transitions() == []
    await c.close()


async def test_a_stale_answer_about_an_old_revision_spares_the_run_claimed_again_meanwhile() -> None:
    """A heartbeat names r4 at revision 1; before its answer (stale) arrives, r4 was claimed again at
    revision 2 by this worker. Only the revision-1 execution may be stopped."""
    first, second = activation("r4", "hang"), {**activation("r4", "hang"), "revision": 2}
    beat_sent = asyncio.Event()
    relaunched = asyncio.Event()
    beats: list[list[Any]] = []
    claims = 0

    async def handle_request(request: httpx.Request) -> httpx.Response:
        nonlocal claims
        path = request.url.path.removeprefix("/api/v1")
        body = json.loads(request.content) if request.content else None
        if path == "/workers/register":
            return httpx.Response(200, json={"worker_id": "w-1", "lease_ttl_ms": 30000, "heartbeat_interval_ms": 20})
        if path == "/workers/claim":
            claims += 1
            if claims == 1:
                return httpx.Response(200, json={"activations": [first]})
            if claims == 2:
                await beat_sent.wait()
                relaunched.set()
                return httpx.Response(200, json={"activations": [second]})
            await asyncio.sleep(body["wait_ms"] / 1000)
            return httpx.Response(200, json={"activations": []})
        if path == "/workers/heartbeat":
            beats.append(body["runs"])
            if body["runs"] == [["r4", 1]] and not beat_sent.is_set():
                beat_sent.set()
                await relaunched.wait()
                # Until the revision-2 execution has started (the workflow appends to a plain list).
                while hang_started.count("r4") < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                return httpx.Response(200, json={"stale": ["r4"]})
            return httpx.Response(200, json={"stale": []})
        return httpx.Response(404)

    c = client(transport=httpx.MockTransport(handle_request))
    handle = await worker([hang], concurrency=2).spawn(c)
    try:
        for _ in range(300):
            if relaunched.is_set() and any(b == [["r4", 2]] for b in beats[-3:]) and len(beats) > 5:
                break
            await asyncio.sleep(0.01)
        # The revision-2 execution is still held and heartbeated after the stale answer.
        assert beats[-1] == [["r4", 2]], beats[-5:]
        assert handle.in_flight == 1
    finally:
        await handle.stop(grace=timedelta(seconds=0.2))
        await c.close()
