"""Aiki embedded: server runtime, in-process client and worker in one process (SPEC §2), public API only."""

import time
from dataclasses import dataclass
from typing import Any

from aiki import Run, client, database, server, task, worker, workflow
from bench.systems import RunHandle, SystemConfig


@task(name="step-1")
async def step1(x: int) -> int:
    return x + 1


@task(name="step-2")
async def step2(x: int) -> int:
    return x + 1


@task(name="step-3")
async def step3(x: int) -> int:
    return x + 1


bench_wf = workflow(name="bench-3-tasks")


@bench_wf.v("1.0.0")
async def three_tasks(run: Run, input: int) -> int:
    a = await step1.start(run, input)
    b = await step2.start(run, a)
    return await step3.start(run, b)


@task(name="step")
async def step(x: int) -> int:
    return x + 1


tasks_wf = workflow(name="bench-n-tasks")


@tasks_wf.v("1.0.0")
async def n_tasks(run: Run, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await step.start(run, x)
    return x


@dataclass
class _Handle:
    inner: Any  # the SDK's run handle; typed loosely so the bench does not pin SDK internals

    async def result(self) -> int:
        output: int = await self.inner.result()
        return output


class AikiSystem:
    def __init__(self, config: SystemConfig) -> None:
        self._config = config
        self._runtime: Any = None
        self._client: Any = None
        self._worker: Any = None

    async def start(self) -> None:
        aiki_server = server(db=database(url=self._config.db_url))
        self._runtime = await aiki_server.runtime.start()  # applies migrations
        self._client = client(handler=aiki_server.handler)
        self._worker = await worker(workflows=[three_tasks, n_tasks], concurrency=self._config.concurrency).spawn(
            self._client
        )

    async def start_run(self, x: int) -> RunHandle:
        return _Handle(await three_tasks.start(self._client, x))

    async def run_tasks(self, n: int) -> float:
        t0 = time.perf_counter()
        handle = await n_tasks.start(self._client, n)
        if await handle.result() != n:
            raise RuntimeError(f"the {n}-task run returned the wrong count")
        return time.perf_counter() - t0

    async def stop(self) -> None:
        # Reverse order of start; each step is skipped if start failed before reaching it.
        if self._worker is not None:
            await self._worker.stop()
        if self._runtime is not None:
            await self._runtime.stop()
        if self._client is not None:
            await self._client.close()


def create(config: SystemConfig) -> AikiSystem:
    return AikiSystem(config)
