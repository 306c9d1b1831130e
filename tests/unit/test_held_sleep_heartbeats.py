"""A worker holding a short sleep is not stopped by heartbeat answers that saw the run sleeping.

The fake server below (a transport: the worker's calls without HTTP) answers every heartbeat at
once and reports a run stale while it is ``sleeping``; it answers the sleep and the resume
transitions late, so beats are answered while those are in flight. The execution must carry on
and finish.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec

from aiki import Run, worker, workflow
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.client import Client

LATE_S = 0.06

nap_wf = workflow(name="hb-nap")


@nap_wf.v("1.0.0")
async def nap_v1(run: Run) -> str:
    await run.sleep(timedelta(milliseconds=150), name="nap")
    return "rested"


class FakeServer:
    max_in_flight = 2

    def __init__(self) -> None:
        self.status = "queued"
        self.revision = 1
        self.stale_answers = 0
        self.claimed = False
        self.done = asyncio.Event()
        self.output: Any = None

    async def register_worker(self, request: p.RegisterWorkerRequest) -> p.RegisterWorkerResponse:
        return p.RegisterWorkerResponse(
            worker_id=request.worker_id, lease_ttl_ms=3000, heartbeat_interval_ms=10, sleep_hold_max_ms=1000
        )

    async def claim(self, request: p.ClaimRequest) -> p.ClaimResponse:
        if self.claimed:
            await asyncio.sleep(request.wait_ms / 1000)  # a long-poll with nothing more to hand out
            return p.ClaimResponse(activations=[])
        self.claimed, self.status = True, "running"
        activation = p.Activation(
            run_id="r1",
            revision=self.revision,
            workflow="hb-nap",
            version="1.0.0",
            attempt=1,
            input=msgspec.Raw(b"null"),
            lease_ttl_ms=3000,
        )
        return p.ClaimResponse(activations=[activation])

    async def heartbeat(self, request: p.HeartbeatRequest) -> p.HeartbeatResponse:
        stale = [r.run_id for r in request.runs if self.status != "running"]
        self.stale_answers += len(stale)
        return p.HeartbeatResponse(stale=stale)

    async def watch(self, request: p.WatchRequest) -> p.WatchResponse:
        await asyncio.sleep(request.wait_ms / 1000)
        return p.WatchResponse()

    async def release(self, request: p.ReleaseRequest) -> p.ReleaseResponse:
        return p.ReleaseResponse(released=[])

    async def aclose(self) -> None:
        pass

    async def run_commands(self, commands: list[p.Command]) -> list[p.CommandResult]:
        [command] = commands  # the workflow has no task: no record travels with a transition
        return [p.CommandResult(transition=await self.transition(command))]

    async def transition(self, command: p.Command) -> p.TransitionResponse:
        if isinstance(command, p.Sleep):
            assert command.hold
            self.status = "sleeping"
            await asyncio.sleep(LATE_S)  # beats are answered (stale) before this answer arrives
            return p.TransitionResponse(status="sleeping", suspended=False, held=True, revision=self.revision)
        if isinstance(command, p.ResumeSleep):
            await asyncio.sleep(LATE_S)  # still `sleeping` for beats answered meanwhile
            self.status = "running"
            return p.TransitionResponse(status="running", suspended=False, revision=self.revision)
        assert isinstance(command, p.Complete), command
        self.status, self.output = "completed", command.output
        self.done.set()
        return p.TransitionResponse(status="completed")


async def test_stale_answers_about_a_held_sleep_do_not_stop_the_execution() -> None:
    server = FakeServer()
    handle = await worker(workflows=[nap_v1], concurrency=4, worker_id="hb-worker").spawn(Client(server))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(server.done.wait(), timeout=10)
    finally:
        await handle.stop(grace=timedelta(seconds=1))
    assert msgspec.json.encode(server.output) == b'"rested"'
    assert server.stale_answers == 0  # the run was left out of every beat while not `running`
