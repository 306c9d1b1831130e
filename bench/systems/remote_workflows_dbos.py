"""The DBOS workflows of the cross-process scenarios, run by a DBOS application process.

    python -m bench.systems.remote_workflows_dbos --db-url postgresql://...

It launches DBOS with these workflows and one queue (`bench`), then waits for SIGTERM. The harness
process enqueues workflows and sends messages with a `DBOSClient`, which, like Aiki's HTTP client,
never runs workflow code. Timestamps are taken inside steps with `time.time_ns()` and returned.
"""

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from dbos import DBOS

QUEUE = "bench"
# DBOS workers find enqueued work by polling the queue. Its default is every 1.0 s; 0.05 s is
# chosen here so the pickup figure reflects DBOS tuned for latency, not its default. See README.
QUEUE_POLL_S = float(os.environ.get("BENCH_DBOS_QUEUE_POLL_S", "0.05"))
SLEEP_S = 0.05
APP_NAME = "bench-remote"


@DBOS.step(name="step-1")
async def step1(x: int) -> int:
    return x + 1


@DBOS.step(name="step-2")
async def step2(x: int) -> int:
    return x + 1


@DBOS.step(name="step-3")
async def step3(x: int) -> int:
    return x + 1


@DBOS.step(name="clock")
async def clock() -> int:
    return time.time_ns()


@DBOS.workflow(name="bench_three_tasks")
async def three_tasks(x: int) -> int:
    a = await step1(x)
    b = await step2(a)
    return await step3(b)


@DBOS.workflow(name="bench_pickup")
async def pickup(x: int) -> int:
    return await clock()


@DBOS.workflow(name="bench_event")
async def event_resume(x: int) -> int:
    await DBOS.set_event_async("waiting", True)
    message = await DBOS.recv_async("go", timeout_seconds=300)
    if message is None:
        raise RuntimeError("no go message")
    return await clock()


@DBOS.workflow(name="bench_sleep")
async def sleep_overshoot(x: int) -> list[int]:
    before = await clock()
    await DBOS.sleep_async(SLEEP_S)
    after = await clock()
    return [before, after]


async def _serve(db_url: str, ready_file: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    DBOS(config={"name": APP_NAME, "system_database_url": db_url, "log_level": "WARNING"})
    DBOS.launch()
    await DBOS.register_queue_async(QUEUE, polling_interval_sec=QUEUE_POLL_S)
    await asyncio.to_thread(Path(ready_file).write_text, str(os.getpid()))
    await stop.wait()
    DBOS.destroy()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.db_url, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
