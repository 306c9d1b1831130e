"""The systems under test, each behind the same small adapter so every scenario's workload is identical.

A system module is imported only inside its own `bench.run_one` subprocess: DBOS keeps a process-wide
singleton and both systems own an event loop's worth of background tasks, so they must never share
a process.
"""

import importlib
from dataclasses import dataclass
from typing import Protocol

# system name -> module defining `create(config) -> System`
SYSTEM_MODULES: dict[str, str] = {
    "aiki": "bench.systems.aiki_embedded",
    "dbos": "bench.systems.dbos_embedded",
}
# The same systems split across processes (scenarios with `remote=True`): module defining
# `create(config) -> RemoteSystem`.
REMOTE_SYSTEM_MODULES: dict[str, str] = {
    "aiki": "bench.systems.aiki_http",
    "dbos": "bench.systems.dbos_client",
    # Aiki's push model: the server delivers each run to an `endpoint(...)` app (uvicorn) instead
    # of a worker claiming it. Cross-process scenarios only; compared with "aiki" (pull).
    "aiki-push": "bench.systems.aiki_push",
}
ALL_SYSTEMS: tuple[str, ...] = tuple(dict.fromkeys([*SYSTEM_MODULES, *REMOTE_SYSTEM_MODULES]))


@dataclass(frozen=True)
class SystemConfig:
    """What the harness tells a system: where its database is and how wide its worker may go."""

    db_url: str
    concurrency: int


class RunHandle(Protocol):
    async def result(self) -> int:
        """Wait for the run to finish and return the workflow's output."""
        ...


class System(Protocol):
    """One embedded durable-execution engine running the 3-task workflow (`x -> x + 3`)."""

    async def start(self) -> None: ...

    async def start_run(self, x: int) -> RunHandle:
        """Start one run of the 3-task workflow on input `x`; return once it is durably recorded."""
        ...

    async def stop(self) -> None: ...

    async def run_tasks(self, n: int) -> float:
        """Run one workflow of `n` sequential tasks; seconds from the start call to its result."""
        ...


class RemoteSystem(System, Protocol):
    """A system whose workflows run in other processes than the one starting them.

    Each probe returns seconds measured with wall-clock timestamps taken inside tasks/steps.
    """

    async def pickup_once(self, x: int) -> float:
        """Start a run; seconds from the start call to its first task starting."""
        ...

    async def event_once(self, x: int) -> float:
        """Start a run that waits for an event; once it waits, send it: seconds until the next task starts."""
        ...

    async def sleep_once(self, x: int) -> float:
        """A run that sleeps 50 ms between two tasks: seconds the gap exceeded 50 ms."""
        ...

    async def latency_once(self, x: int) -> float:
        """Start a 3-task run and wait for its result, as a client would: seconds from start to result."""
        ...


class RequeueProbes(Protocol):
    """Aiki only: how long a run that becomes claimable again waits for its claim (run history)."""

    async def event_pair_once(self, x: int) -> list[float]:
        """A run waiting for an event gets two, back to back: seconds from each re-queue to its claim."""
        ...

    async def child_chain_once(self, x: int) -> list[float]:
        """A parent runs 5 children one after another: seconds from each child's start, and each
        re-queue of the parent, to the claim."""
        ...


class SystemUnavailableError(Exception):
    """The system's package cannot be imported (for example `aiki` is not built yet)."""


def load_system(name: str, config: SystemConfig, *, remote: bool = False) -> System:
    modules = REMOTE_SYSTEM_MODULES if remote else SYSTEM_MODULES
    if name not in modules:
        raise SystemUnavailableError(f"{name} has no {'cross-process' if remote else 'embedded'} adapter")
    module_name = modules[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemUnavailableError(f"{name} unavailable: {type(exc).__name__}: {exc}") from exc
    system: System = module.create(config)
    return system
