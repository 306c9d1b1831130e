"""The scenario registry. A scenario is an async function run inside one system's subprocess.

Each returns a flat dict of numbers; `Scenario.metrics` names the ones the comparison table shows.
Everything else in the dict still goes to the JSON file.
"""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench.stats import latency_summary
from bench.systems import RemoteSystem, System

Backend = Literal["postgres", "sqlite"]
Numbers = dict[str, float | int]

# The workflow adds 1 in each of its 3 tasks.
EXPECTED_DELTA = 3
# Warm-up inputs live far above any measured input so no run can be deduplicated against another.
WARMUP_INPUT_BASE = 10_000_000


@dataclass(frozen=True)
class Params:
    runs: int
    latency_runs: int
    warmup: int
    probe_runs: int = 100


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    backend: Backend
    metrics: tuple[Metric, ...]
    func: Callable[[System, Params], Awaitable[Numbers]]
    # Which `Params` field sets how many runs the scenario measures (shown next to its name).
    size_param: Literal["runs", "latency_runs", "probe_runs"] = "runs"
    # Shown instead when the size is fixed by the scenario itself.
    size_label: str | None = None
    systems: tuple[str, ...] = ("aiki", "dbos")
    """Which systems run it; "aiki-push" (the push model) only in cross-process scenarios that list it."""
    # Runs the system split across processes (`bench.systems.REMOTE_SYSTEM_MODULES`).
    remote: bool = False


SCENARIOS: dict[str, Scenario] = {}

PEAK_RSS = Metric("peak_rss_mb", "peak RSS MB", higher_is_better=False)
THROUGHPUT = Metric("throughput_per_s", "runs/s", higher_is_better=True)
LATENCY = (
    Metric("p50_ms", "p50 ms", higher_is_better=False),
    Metric("p95_ms", "p95 ms", higher_is_better=False),
    Metric("p99_ms", "p99 ms", higher_is_better=False),
)


def register(scenario: Scenario) -> None:
    if scenario.name in SCENARIOS:
        raise ValueError(f"duplicate scenario {scenario.name!r}")
    SCENARIOS[scenario.name] = scenario


class WrongResultError(Exception):
    pass


async def _one_run(system: System, x: int) -> float:
    """Start a run, wait for its output, check it; returns seconds from start call to result."""
    t0 = time.perf_counter()
    handle = await system.start_run(x)
    output = await handle.result()
    elapsed = time.perf_counter() - t0
    if output != x + EXPECTED_DELTA:
        raise WrongResultError(f"run with input {x} returned {output!r}, expected {x + EXPECTED_DELTA}")
    return elapsed


async def _warm_up(system: System, count: int) -> None:
    # Connection pools, caches and lazy imports fill on the first runs; keep them out of the figures.
    for i in range(count):
        await _one_run(system, WARMUP_INPUT_BASE + i)


async def burst(system: System, params: Params) -> Numbers:
    """Start `runs` workflows at once and wait for all of them."""
    await _warm_up(system, params.warmup)
    t0 = time.perf_counter()
    per_run = await asyncio.gather(*(_one_run(system, i) for i in range(params.runs)))
    elapsed = time.perf_counter() - t0
    summary = latency_summary(list(per_run))
    return {
        "runs": params.runs,
        "elapsed_s": elapsed,
        "throughput_per_s": params.runs / elapsed,
        # How long a single run took while competing with the whole burst: informational only.
        **{f"run_{key}": value for key, value in summary.items()},
    }


async def sequential_latency(system: System, params: Params) -> Numbers:
    """Run `latency_runs` workflows one after another; each sample is start call -> result."""
    await _warm_up(system, params.warmup)
    samples = [await _one_run(system, i) for i in range(params.latency_runs)]
    return {"runs": params.latency_runs, **latency_summary(samples)}


register(
    Scenario(
        name="burst",
        description="3-task workflow, N runs started at once on Postgres; N / (first start -> last result)",
        backend="postgres",
        metrics=(THROUGHPUT, PEAK_RSS),
        func=burst,
    )
)
register(
    Scenario(
        name="latency",
        description="3-task workflow, M runs one after another on Postgres; start call -> result available",
        backend="postgres",
        metrics=(*LATENCY, PEAK_RSS),
        func=sequential_latency,
        size_param="latency_runs",
    )
)
# A 10-task run's cost per task against a 10,000-task run's: what grows with a run's history.
SHORT_RUN_TASKS = 10
LONG_RUN_TASKS = 10_000
SHORT_RUN_SAMPLES = 50


async def cost_per_task(system: System, params: Params) -> Numbers:
    """Seconds per task in a 10-task run (mean of several) and in one 10,000-task run."""
    await _warm_up(system, params.warmup)
    await system.run_tasks(SHORT_RUN_TASKS)
    short = [await system.run_tasks(SHORT_RUN_TASKS) for _ in range(SHORT_RUN_SAMPLES)]
    short_us = sum(short) / len(short) / SHORT_RUN_TASKS * 1e6
    long_us = await system.run_tasks(LONG_RUN_TASKS) / LONG_RUN_TASKS * 1e6
    return {"us_per_task_10": short_us, "us_per_task_10k": long_us, "growth": long_us / short_us}


register(
    Scenario(
        name="cost_per_task",
        description=(
            f"one run of {LONG_RUN_TASKS:,} sequential tasks vs runs of {SHORT_RUN_TASKS}: time per task, "
            "and how much it grows (10k / 10; 1.0 = no growth)"
        ),
        backend="postgres",
        metrics=(
            Metric("us_per_task_10", f"µs/task ({SHORT_RUN_TASKS})", False),
            Metric("us_per_task_10k", f"µs/task ({LONG_RUN_TASKS:,})", False),
            Metric("growth", "growth 10k/10", False),
        ),
        func=cost_per_task,
        size_label=f"{SHORT_RUN_TASKS} vs {LONG_RUN_TASKS:,} tasks",
    )
)
register(
    Scenario(
        name="burst_sqlite",
        description="the burst scenario on each system's SQLite database file",
        backend="sqlite",
        metrics=(THROUGHPUT, PEAK_RSS),
        func=burst,
    )
)


# -- across processes -------------------------------------------------------------------------

# Starting many runs over HTTP: at most this many start calls, and this many result waits, at once
# (one connection each), so the figure measures the system rather than the client's socket pool.
REMOTE_IN_FLIGHT = 100


def _remote(system: System) -> RemoteSystem:
    assert hasattr(system, "pickup_once"), "a remote scenario needs a RemoteSystem"
    return system  # type: ignore[return-value]


async def _bounded(limit: int, coros: list[Awaitable[float]]) -> list[float]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[float]) -> float:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def remote_burst(system: System, params: Params) -> Numbers:
    """Start `runs` 3-task runs from this process; workers in another process run them."""
    await _warm_up(system, params.warmup)
    t0 = time.perf_counter()
    handles = await _bounded(REMOTE_IN_FLIGHT, [system.start_run(i) for i in range(params.runs)])  # type: ignore[misc]
    started = time.perf_counter()

    async def check(i: int, handle: Any) -> float:
        output = await handle.result()
        if output != i + EXPECTED_DELTA:
            raise WrongResultError(f"run with input {i} returned {output!r}, expected {i + EXPECTED_DELTA}")
        return 0.0

    await _bounded(REMOTE_IN_FLIGHT, [check(i, h) for i, h in enumerate(handles)])
    elapsed = time.perf_counter() - t0
    return {
        "runs": params.runs,
        "elapsed_s": elapsed,
        "start_phase_s": started - t0,
        "throughput_per_s": params.runs / elapsed,
    }


def _probe(name: str) -> Callable[[System, Params], Awaitable[Numbers]]:
    async def scenario(system: System, params: Params) -> Numbers:
        remote = _remote(system)
        once: Callable[[int], Awaitable[float]] = getattr(remote, f"{name}_once")
        for i in range(min(params.warmup, 5)):
            await once(WARMUP_INPUT_BASE + i)
        samples = [await once(i) for i in range(params.probe_runs)]
        return {"runs": params.probe_runs, **latency_summary(samples)}

    scenario.__name__ = f"{name}_probe"
    return scenario


register(
    Scenario(
        name="http_burst",
        description="3-task workflow, N runs started from a client process; server and worker in other processes",
        backend="postgres",
        metrics=(THROUGHPUT,),
        func=remote_burst,
        systems=("aiki", "dbos", "aiki-push"),
        remote=True,
    )
)
register(
    Scenario(
        name="http_latency",
        description="3-task workflow, runs one after another from a client process: start call -> result seen",
        backend="postgres",
        metrics=LATENCY,
        func=_probe("latency"),
        size_param="probe_runs",
        systems=("aiki", "dbos", "aiki-push"),
        remote=True,
    )
)
register(
    Scenario(
        name="pickup",
        description="new run -> its first task starts, in a worker process (one run at a time)",
        backend="postgres",
        metrics=(Metric("p50_ms", "p50 ms", False), Metric("p99_ms", "p99 ms", False)),
        func=_probe("pickup"),
        size_param="probe_runs",
        systems=("aiki", "dbos", "aiki-push"),
        remote=True,
    )
)
register(
    Scenario(
        name="event_resume",
        description="event sent from a client process to a waiting run -> the run's next task starts",
        backend="postgres",
        metrics=(Metric("p50_ms", "p50 ms", False), Metric("p99_ms", "p99 ms", False)),
        func=_probe("event"),
        size_param="probe_runs",
        remote=True,
    )
)
register(
    Scenario(
        name="sleep_overshoot",
        description="50 ms durable sleep between two tasks in a worker process: gap - 50 ms",
        backend="postgres",
        metrics=(Metric("p50_ms", "p50 ms", False), Metric("p99_ms", "p99 ms", False)),
        func=_probe("sleep"),
        size_param="probe_runs",
        remote=True,
    )
)


# -- re-queued runs: claimable -> claimed ---------------------------------------------------------

# Probes in flight at once: several runs contending for the same rows and workers, as in a service
# (`BENCH_REQUEUE_IN_FLIGHT=1` measures one at a time).
REQUEUE_IN_FLIGHT = int(os.environ.get("BENCH_REQUEUE_IN_FLIGHT", "8"))
# A claim later than this is counted as stalled (a missed wake-up waits for the 10 s recheck).
STALLED_S = 1.0
REQUEUE_METRICS = (
    Metric("p50_ms", "p50 ms", False),
    Metric("p99_ms", "p99 ms", False),
    Metric("max_ms", "max ms", False),
    Metric("stalled", f"claims > {STALLED_S:.0f} s", False),
)


def _requeue_probe(name: str) -> Callable[[System, Params], Awaitable[Numbers]]:
    async def scenario(system: System, params: Params) -> Numbers:
        once: Callable[[int], Awaitable[list[float]]] = getattr(system, f"{name}_once")
        for i in range(min(params.warmup, 5)):
            await once(WARMUP_INPUT_BASE + i)
        gate = asyncio.Semaphore(REQUEUE_IN_FLIGHT)

        async def one(i: int) -> list[float]:
            async with gate:
                return await once(i)

        samples = [s for batch in await asyncio.gather(*(one(i) for i in range(params.probe_runs))) for s in batch]
        return {
            "runs": params.probe_runs,
            "claims": len(samples),
            "stalled": sum(1 for s in samples if s > STALLED_S),
            **latency_summary(samples),
        }

    scenario.__name__ = f"{name}_probe"
    return scenario


register(
    Scenario(
        name="event_requeue",
        description=(
            f"a waiting run gets two events back to back ({REQUEUE_IN_FLIGHT} such runs at a time): "
            "run claimable again (history: -> queued) -> claimed"
        ),
        backend="postgres",
        metrics=REQUEUE_METRICS,
        func=_requeue_probe("event_pair"),
        size_param="probe_runs",
        systems=("aiki",),
        remote=True,
    )
)
register(
    Scenario(
        name="child_chain",
        description=(
            f"a parent starts 5 children one after another, awaiting each ({REQUEUE_IN_FLIGHT} parents at a time): "
            "child started / parent re-queued -> claimed"
        ),
        backend="postgres",
        metrics=REQUEUE_METRICS,
        func=_requeue_probe("child_chain"),
        size_param="probe_runs",
        systems=("aiki",),
        remote=True,
    )
)


async def signup_flood(system: System, params: Params) -> Numbers:
    from bench.auth_flood import measure

    db_url: str = system._config.db_url  # type: ignore[attr-defined]  # the embedded adapter's database
    return await measure(
        db_url,
        variant=os.environ.get("BENCH_FLOOD_VARIANT", "botnet"),
        tenant_requests=params.latency_runs,
        flood_concurrency=int(os.environ.get("BENCH_FLOOD_CONCURRENCY", "32")),
        warmup=params.warmup,
    )


register(
    Scenario(
        name="signup_flood",
        description=(
            "an authenticated tenant's GET /runs latency alone, then while 32 anonymous clients flood "
            "sign-ups and wrong-password logins (IAM on; server, flood and tenant in separate processes)"
        ),
        backend="postgres",
        metrics=(
            Metric("alone_p50_ms", "tenant p50 ms alone", False),
            Metric("flood_p50_ms", "tenant p50 ms in flood", False),
            Metric("flood_p99_ms", "tenant p99 ms in flood", False),
            Metric("alone_p99_ms", "tenant p99 ms alone", False),
        ),
        func=signup_flood,
        size_param="latency_runs",
        systems=("aiki",),
    )
)
