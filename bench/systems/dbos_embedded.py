"""DBOS 3.x in-process: async workflow and async steps on DBOS's own system database.

DBOS has no worker-concurrency knob for directly started workflows (each is an asyncio task), so
`SystemConfig.concurrency` does not apply here.
"""

import time
from dataclasses import dataclass

from dbos import DBOS, WorkflowHandleAsync

from bench.systems import RunHandle, SystemConfig


@DBOS.step()
async def step1(x: int) -> int:
    return x + 1


@DBOS.step()
async def step2(x: int) -> int:
    return x + 1


@DBOS.step()
async def step3(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def three_tasks(x: int) -> int:
    a = await step1(x)
    b = await step2(a)
    return await step3(b)


@DBOS.step()
async def step(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def n_tasks(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await step(x)
    return x


@dataclass
class _Handle:
    inner: WorkflowHandleAsync[int]

    async def result(self) -> int:
        return await self.inner.get_result()


class DbosSystem:
    def __init__(self, config: SystemConfig) -> None:
        self._config = config

    async def start(self) -> None:
        # WARNING keeps DBOS's per-launch INFO lines out of the harness's stderr capture.
        DBOS(config={"name": "bench", "system_database_url": self._config.db_url, "log_level": "WARNING"})
        DBOS.launch()

    async def start_run(self, x: int) -> RunHandle:
        return _Handle(await DBOS.start_workflow_async(three_tasks, x))

    async def run_tasks(self, n: int) -> float:
        t0 = time.perf_counter()
        handle = await DBOS.start_workflow_async(n_tasks, n)
        if await handle.get_result() != n:
            raise RuntimeError(f"the {n}-step workflow returned the wrong count")
        return time.perf_counter() - t0

    async def stop(self) -> None:
        DBOS.destroy()


def create(config: SystemConfig) -> DbosSystem:
    return DbosSystem(config)
