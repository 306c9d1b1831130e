"""Workflows served by the end-to-end worker processes (``tests/e2e/worker_proc.py``).

Every task appends ``<run_id> <task_name> start|done <pid>`` to a ledger file shared by all
processes of a test (its path is in ``$AIKI_E2E_LEDGER``), so the test can see across processes
which tasks ran, how often and in which process. Each line is written with one ``write`` on an
``O_APPEND`` descriptor (atomic for lines this short) and fsynced before the task goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiki import Run, Task, WorkflowVersion, task, workflow

LEDGER_ENV = "AIKI_E2E_LEDGER"
BLOCK_ENV = "AIKI_E2E_BLOCK_TASK"
"""Name of a task that blocks (until the process is killed) instead of running."""
FSYNC_ENV = "AIKI_E2E_FSYNC"
"""``0`` turns off the fsync of ledger lines (for the many-runs test); on by default."""


# -- the ledger ---------------------------------------------------------------------------------


def ledger_write(run_id: str, task_name: str, event: str) -> None:
    """Append one ledger line, durably, before the task goes on."""
    path = os.environ[LEDGER_ENV]
    line = f"{run_id} {task_name} {event} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        if os.environ.get(FSYNC_ENV, "1") != "0":
            os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class LedgerLine:
    run_id: str
    task: str
    event: str
    pid: int


def read_ledger(path: Path) -> list[LedgerLine]:
    """Every complete line of the ledger, in file order."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) == 4:
            lines.append(LedgerLine(parts[0], parts[1], parts[2], int(parts[3])))
    return lines


# -- tasks --------------------------------------------------------------------------------------


def _ledgered_task(name: str) -> Task[str, str]:
    """A task taking the run id: logs start, (maybe blocks), logs done, returns a marker."""

    @task(name=name)
    async def handler(run_id: str) -> str:
        ledger_write(run_id, name, "start")
        if os.environ.get(BLOCK_ENV) == name:
            # Hold the run (heartbeats keep its lease) until the test SIGKILLs this process.
            await asyncio.sleep(3600)
        ledger_write(run_id, name, "done")
        return f"{name}-ok"

    return handler


STEPS = [_ledgered_task(f"step-{i}") for i in range(1, 6)]


@task(name="poison")
async def poison(run_id: str) -> None:
    """Kills its own worker process, every time (after a short delay, so co-located runs finish)."""
    ledger_write(run_id, "poison", "start")
    await asyncio.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


# -- workflows ----------------------------------------------------------------------------------

five_steps = workflow(name="e2e-five-steps")


@five_steps.v("1.0.0")
async def five_steps_v1(run: Run, input: str) -> list[str]:
    return [await step.start(run, run.id) for step in STEPS]


three_steps = workflow(name="e2e-three-steps")


@three_steps.v("1.0.0")
async def three_steps_v1(run: Run, input: str) -> list[str]:
    return [await step.start(run, run.id) for step in STEPS[:3]]


poison_pill = workflow(name="e2e-poison-pill")


@poison_pill.v("1.0.0")
async def poison_pill_v1(run: Run, input: str) -> str:
    await STEPS[0].start(run, run.id)
    await poison.start(run, run.id)
    return "unreachable"


WORKFLOWS: dict[str, WorkflowVersion[Any, Any]] = {
    "five": five_steps_v1,
    "three": three_steps_v1,
    "poison": poison_pill_v1,
}
"""The versions a worker process can serve, by the key given on its command line."""
