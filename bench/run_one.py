"""Runs one scenario for one system in this (fresh) process and prints a JSON result on stdout.

    python -m bench.run_one <system> <scenario> --db-url URL [--runs N] [--latency-runs M] ...
    python -m bench.run_one <system> --check        # only: can the system be imported?

Stdout carries nothing but that JSON: everything else the process writes to fd 1 (libraries that
log to stdout) is redirected to stderr, which the harness shows only when a run fails.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

from bench.scenarios import SCENARIOS, Params
from bench.systems import (
    ALL_SYSTEMS,
    REMOTE_SYSTEM_MODULES,
    SYSTEM_MODULES,
    SystemConfig,
    SystemUnavailableError,
    load_system,
)

STOP_TIMEOUT_S = 30.0


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    config = SystemConfig(db_url=args.db_url, concurrency=args.concurrency)
    scenario = SCENARIOS[args.scenario]
    system = load_system(args.system, config, remote=scenario.remote)
    params = Params(runs=args.runs, latency_runs=args.latency_runs, warmup=args.warmup, probe_runs=args.probe_runs)
    await system.start()
    try:
        metrics = await scenario.func(system, params)
    finally:
        # A hung shutdown must not hold the harness; the measured figures are already in hand.
        await asyncio.wait_for(system.stop(), STOP_TIMEOUT_S)
    return {"ok": True, "metrics": metrics}


def _execute(args: argparse.Namespace) -> dict[str, Any]:
    base: dict[str, Any] = {"system": args.system, "scenario": args.scenario}
    t0 = time.perf_counter()
    try:
        if args.check:
            for remote, modules in ((False, SYSTEM_MODULES), (True, REMOTE_SYSTEM_MODULES)):
                if args.system in modules:
                    load_system(args.system, SystemConfig(db_url="", concurrency=1), remote=remote)
            outcome: dict[str, Any] = {"ok": True}
        else:
            outcome = asyncio.run(_run(args))
    except SystemUnavailableError as exc:
        outcome = {"ok": False, "unavailable": True, "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result = {**base, **outcome, "wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}
    if result["ok"] and "metrics" in result:
        result["metrics"]["peak_rss_mb"] = result["peak_rss_mb"]
    return result


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run_one")
    parser.add_argument("system", choices=sorted(ALL_SYSTEMS))
    parser.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS))
    parser.add_argument("--check", action="store_true", help="only check that the system imports")
    parser.add_argument("--db-url", default="")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--probe-runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    if not args.check and (args.scenario is None or not args.db_url):
        parser.error("a scenario and --db-url are required unless --check")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    # Keep the real stdout for the JSON and point fd 1 at stderr for everything else.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = _execute(args)
    sys.stdout.flush()
    json.dump(result, json_out)
    json_out.write("\n")
    json_out.close()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
