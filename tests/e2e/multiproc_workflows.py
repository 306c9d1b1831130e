"""Workflows served by ``aiki worker`` processes in the many-process tests.

    aiki worker tests.e2e.multiproc_workflows:PROBE --url http://127.0.0.1:PORT
    aiki worker tests.e2e.multiproc_workflows:MANY --url http://127.0.0.1:PORT

``probe`` stamps the wall clock (``time.time_ns()``, comparable across processes on one machine)
when each of its tasks starts, in the file named by ``$AIKI_E2E_TIMES``, so a test can measure
how long a run waited to be picked up, to wake from a sleep and to resume after an event.

``many`` is the acceptance workload: five tasks, two short sleeps and one event; each task appends
to the shared ledger (``tests/e2e/workflows.py``) with its process id.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from aiki import Run, Task, event, task, workflow
from tests.e2e.workflows import ledger_write

TIMES_ENV = "AIKI_E2E_TIMES"
PROBE_SLEEP_MS = 200


def stamp(run_id: str, what: str) -> None:
    """Append ``<run_id> <what> <time_ns> <pid>`` to the times file (one atomic write)."""
    line = f"{run_id} {what} {time.time_ns()} {os.getpid()}\n".encode()
    fd = os.open(os.environ[TIMES_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_stamps(path: Path) -> dict[tuple[str, str], int]:
    """``(run_id, what) -> time_ns`` of the first stamp of each."""
    found: dict[tuple[str, str], int] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            parts = raw.split()
            if len(parts) == 4:
                found.setdefault((parts[0], parts[1]), int(parts[2]))
    return found


@task(name="probe-a")
async def probe_a(run_id: str) -> str:
    stamp(run_id, "a")
    return "a"


@task(name="probe-b")
async def probe_b(run_id: str) -> str:
    stamp(run_id, "b")
    return "b"


@task(name="probe-c")
async def probe_c(run_id: str) -> str:
    stamp(run_id, "c")
    return "c"


probe = workflow(name="e2e-probe")


@probe.v("1.0.0", events={"go": event()})
async def probe_v1(run: Run, input: str) -> list[str]:
    """Task, sleep, task, wait for ``go``, task: each step's start is stamped."""
    out = [await probe_a.start(run, run.id)]
    await run.sleep(timedelta(milliseconds=PROBE_SLEEP_MS), name="nap")
    out.append(await probe_b.start(run, run.id))
    got = await run.events.go.wait(timeout=timedelta(minutes=5))
    if got.timeout:
        raise RuntimeError("no go event")
    out.append(await probe_c.start(run, run.id))
    return out


PROBE = [probe_v1]


def _step(number: int) -> Task[str, str]:
    name = f"many-{number}"

    @task(name=name)
    async def handler(run_id: str) -> str:
        ledger_write(run_id, name, "start")
        ledger_write(run_id, name, "done")
        return f"{name}-ok"

    return handler


M1, M2, M3, M4, M5 = (_step(i) for i in range(1, 6))
many = workflow(name="e2e-many")
MANY_TASKS = [f"many-{i}" for i in range(1, 6)]


@many.v("1.0.0", events={"go": event()})
async def many_v1(run: Run, input: int) -> list[str]:
    """Five tasks around two 50-200 ms sleeps and one event (sent by the test)."""
    out = [await M1.start(run, run.id)]
    await run.sleep(timedelta(milliseconds=50 + input * 37 % 151), name="first")
    out.append(await M2.start(run, run.id))
    got = await run.events.go.wait(timeout=timedelta(minutes=5))
    if got.timeout:
        raise RuntimeError("no go event")
    out.append(await M3.start(run, run.id))
    await run.sleep(timedelta(milliseconds=50 + input * 53 % 151), name="second")
    out.append(await M4.start(run, run.id))
    out.append(await M5.start(run, run.id))
    return out


MANY = [many_v1]
