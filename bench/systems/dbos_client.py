"""DBOS across processes: a DBOS application process runs the workflows; this process is a `DBOSClient`.

DBOS has no server: a client enqueues workflows and sends messages by writing to the system
database, and the application process finds enqueued work by polling its queue (see
`remote_workflows_dbos.QUEUE_POLL_S`) and messages through LISTEN/NOTIFY.
"""

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbos import DBOSClient

from bench.systems import RunHandle, SystemConfig
from bench.systems.processes import Child
from bench.systems.remote_workflows_dbos import APP_NAME, QUEUE, SLEEP_S

# The client learns of a result by polling (default every 1 s). Figures come from timestamps taken
# inside steps, so this only paces the harness; for the burst it bounds how fast finished runs are
# noticed, so it is kept short.
RESULT_POLL_S = 0.1
PROBE_RESULT_POLL_S = 0.01


@dataclass
class _Handle:
    inner: Any

    async def result(self) -> int:
        output: int = await self.inner.get_result(polling_interval_sec=RESULT_POLL_S)
        return output


class DbosClientSystem:
    def __init__(self, config: SystemConfig) -> None:
        self._config = config
        self._app: Child | None = None
        self._client: DBOSClient | None = None

    async def start(self) -> None:
        ready_file = Path(tempfile.mkdtemp(prefix="bench-dbos-")) / "ready"
        self._app = Child(
            "dbos-app",
            [
                "-m",
                "bench.systems.remote_workflows_dbos",
                "--db-url",
                self._config.db_url,
                "--ready-file",
                str(ready_file),
            ],
        )

        async def launched() -> bool:
            return ready_file.exists()

        await self._app.wait_until(launched)
        self._client = DBOSClient(
            system_database_url=self._config.db_url, use_listen_notify=True, application_name=APP_NAME
        )

    async def _enqueue(self, workflow: str, x: int) -> Any:
        assert self._client is not None
        options: Any = {"queue_name": QUEUE, "workflow_name": workflow, "workflow_id": str(uuid.uuid4())}
        return await self._client.enqueue_async(options, x)

    async def start_run(self, x: int) -> RunHandle:
        return _Handle(await self._enqueue("bench_three_tasks", x))

    async def pickup_once(self, x: int) -> float:
        t0 = time.time_ns()
        handle = await self._enqueue("bench_pickup", x)
        started: int = await handle.get_result(polling_interval_sec=PROBE_RESULT_POLL_S)
        return (started - t0) / 1e9

    async def event_once(self, x: int) -> float:
        assert self._client is not None
        handle = await self._enqueue("bench_event", x)
        waiting = await self._client.get_event_async(handle.get_workflow_id(), "waiting", timeout_seconds=30)
        if not waiting:
            raise RuntimeError(f"workflow {handle.get_workflow_id()} never reached its recv")
        t_send = time.time_ns()
        await self._client.send_async(handle.get_workflow_id(), x, "go")
        resumed: int = await handle.get_result(polling_interval_sec=PROBE_RESULT_POLL_S)
        return (resumed - t_send) / 1e9

    async def latency_once(self, x: int) -> float:
        t0 = time.perf_counter()
        handle = await self._enqueue("bench_three_tasks", x)
        output = await handle.get_result(polling_interval_sec=PROBE_RESULT_POLL_S)
        if output != x + 3:
            raise RuntimeError(f"workflow {handle.get_workflow_id()} returned {output!r}")
        return time.perf_counter() - t0

    async def sleep_once(self, x: int) -> float:
        handle = await self._enqueue("bench_sleep", x)
        before, after = await handle.get_result(polling_interval_sec=PROBE_RESULT_POLL_S)
        return (after - before) / 1e9 - SLEEP_S

    async def stop(self) -> None:
        if self._client is not None:
            self._client.destroy()
        if self._app is not None:
            await asyncio.to_thread(self._app.stop)


def create(config: SystemConfig) -> DbosClientSystem:
    return DbosClientSystem(config)
