"""The chaos suite's workflows, served by real ``aiki worker tests.chaos.workload:VERSIONS`` processes.

Every task execution appends two lines to a side-effect ledger shared by all processes (its path is
in ``$AIKI_CHAOS_LEDGER``): ``<time> <pid> start <key>`` when its code begins and ``<time> <pid> end
<key>`` when its side effect is done, just before it returns. A task's input is its key,
``<run id>/<label>``, unique in the whole campaign, so one (run, task address, seq) is one key. Each
line is one ``write`` on an ``O_APPEND`` descriptor: atomic, and in the OS before the task goes on
(a SIGKILL loses nothing written; the suite never restarts the machine).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiki import Run, WorkflowVersion, event, task, workflow

LEDGER_ENV = "AIKI_CHAOS_LEDGER"


def ledger_write(event_name: str, key: str) -> None:
    line = f"{time.time():.6f} {os.getpid()} {event_name} {key}\n".encode()
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class LedgerLine:
    at: float
    pid: int
    event: str
    key: str


def read_ledger(path: Path) -> list[LedgerLine]:
    """Every complete line, in file order."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) == 4:
            lines.append(LedgerLine(float(parts[0]), int(parts[1]), parts[2], parts[3]))
    return lines


# -- tasks --------------------------------------------------------------------------------------


@task(name="chaos-step")
async def step(key: str) -> str:
    """A side effect that takes a moment (so kills land inside tasks as well as between them)."""
    ledger_write("start", key)
    await asyncio.sleep(random.uniform(0.0, 0.15))
    ledger_write("end", key)
    return key


@task(name="chaos-poison")
async def poison(key: str) -> None:
    """Kills its own worker process, every time (after a moment, so co-located runs get on)."""
    ledger_write("start", key)
    await asyncio.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


# -- workflows ----------------------------------------------------------------------------------

chaos_child = workflow(name="chaos-child")


@chaos_child.v("1.0.0")
async def child_v1(run: Run, parent_id: str) -> str:
    await step.start(run, f"{run.id}/c1")
    await run.sleep(timedelta(milliseconds=300), "nap")
    await step.start(run, f"{run.id}/c2")
    return "child-ok"


chaos_mix = workflow(name="chaos-mix")


@chaos_mix.v("1.0.0", events={"poke": event()})
async def mix_v1(run: Run, n: int) -> str:
    """Task, sleep (held in memory or suspended), child, event wait, task."""
    await step.start(run, f"{run.id}/a")
    # Sleeps up to the server's hold limit (1 s) stay in the worker; longer ones suspend the run.
    await run.sleep(timedelta(milliseconds=200 + (n % 5) * 300), "nap")
    child = await child_v1.start_as_child(run, run.id)
    result = await child.wait_for_status("completed", timeout=timedelta(minutes=10))
    if result.status != "completed":
        raise RuntimeError(f"child {child.id} ended {result.status}")
    poke = await run.events.poke.wait(timeout=timedelta(minutes=10))
    if poke.timeout:
        raise RuntimeError("the poke event never came")
    await step.start(run, f"{run.id}/b")
    return "ok"


chaos_pill = workflow(name="chaos-pill")


@chaos_pill.v("1.0.0")
async def pill_v1(run: Run, n: int) -> str:
    await step.start(run, f"{run.id}/a")
    await poison.start(run, f"{run.id}/poison")
    return "unreachable"


chaos_plain = workflow(name="chaos-plain")


@chaos_plain.v("1.0.0")
async def plain_v1(run: Run, n: int) -> str:
    for label in ("a", "b", "c"):
        await step.start(run, f"{run.id}/{label}")
    return "ok"


VERSIONS: list[WorkflowVersion[Any, Any]] = [mix_v1, child_v1, plain_v1]
"""What the campaign's workers serve."""

WITH_PILL: list[WorkflowVersion[Any, Any]] = [pill_v1, plain_v1]
"""What the poison-pill test's dying workers serve."""

PLAIN: list[WorkflowVersion[Any, Any]] = [plain_v1]
"""What the poison-pill test's healthy worker serves."""
