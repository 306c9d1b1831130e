"""After an outage a worker is back at work within about 2 s: registration and claim retries back
off to at most ``RETRY_BACKOFF_MAX_S`` (with jitter), not 5 or 10 s.

The fake server refuses registration and then claims a number of times (as a server that is down
or answers 503 would); the worker's waits are read from its log, and time is not spent waiting.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
from typing import Any

import pytest

from aiki import Run, worker, workflow
from aiki.worker_sdk import protocol as p
from aiki.worker_sdk.client import Client
from aiki.worker_sdk.errors import ServerUnavailableError

worker_module = importlib.import_module("aiki.worker_sdk.worker")

FAILURES = 12

idle_wf = workflow(name="backoff-idle")


@idle_wf.v("1.0.0")
async def idle_v1(run: Run) -> None:
    return None


class DownServer:
    """A transport (the worker's calls without HTTP) to a server that is down for a while."""

    max_in_flight = 2

    def __init__(self) -> None:
        self.registrations = 0
        self.claims = 0
        self.back = asyncio.Event()

    async def register_worker(self, request: p.RegisterWorkerRequest) -> p.RegisterWorkerResponse:
        self.registrations += 1
        if self.registrations <= FAILURES:
            raise ServerUnavailableError("the server is down")
        return p.RegisterWorkerResponse(worker_id=request.worker_id, lease_ttl_ms=3000, heartbeat_interval_ms=1000)

    async def claim(self, request: p.ClaimRequest) -> p.ClaimResponse:
        self.claims += 1
        if self.claims <= FAILURES:
            raise ServerUnavailableError("the server is down")
        self.back.set()
        await asyncio.Event().wait()  # a long-poll with nothing to hand out
        raise AssertionError("unreachable")

    async def heartbeat(self, request: p.HeartbeatRequest) -> p.HeartbeatResponse:
        return p.HeartbeatResponse(stale=[])

    async def watch(self, request: Any) -> Any:
        await asyncio.Event().wait()

    async def release(self, request: Any) -> Any:
        return None

    async def run_commands(self, commands: Any) -> Any:
        raise AssertionError("no run is claimed: nothing is written")

    async def aclose(self) -> None:
        pass


async def test_registration_and_claim_retries_wait_at_most_about_two_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_sleep = asyncio.sleep

    async def no_wait(delay: float, result: Any = None) -> Any:
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    server = DownServer()
    caplog.set_level(logging.WARNING, logger=worker_module.log.name)
    handle = await worker([idle_v1], concurrency=1).spawn(Client(server))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(server.back.wait(), 10)
    finally:
        handle._stopping = True
        for task in (handle._claim_task, handle._heartbeat_task, handle._watch_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (handle._claim_task, handle._heartbeat_task, handle._watch_task) if t), return_exceptions=True
        )

    def waits(what: str) -> list[float]:
        return [
            float(m.group(1))
            for r in caplog.records
            if (m := re.search(rf"{what}, retrying in ([0-9.]+)s", r.getMessage()))
        ]

    for what in ("cannot register yet", "claim failed"):
        seen = waits(what)
        assert len(seen) == FAILURES, (what, seen)
        assert max(seen) <= worker_module.RETRY_BACKOFF_MAX_S, (what, seen)
        # It does back off (with jitter, between half and all of the cap once there).
        assert min(seen[-4:]) >= worker_module.RETRY_BACKOFF_MAX_S / 2 - 0.05, (what, seen)
