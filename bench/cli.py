"""`python -m bench`: runs the scenarios for Aiki and DBOS, prints the comparison, writes JSON."""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import databases
from bench.report import table
from bench.scenarios import SCENARIOS, Scenario
from bench.systems import ALL_SYSTEMS, SYSTEM_MODULES

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
SYSTEMS = ALL_SYSTEMS  # aiki, dbos, aiki-push (the push model; cross-process scenarios that list it)
STDERR_TAIL_LINES = 30


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Aiki vs DBOS: same workloads, same database, one subprocess per system and scenario.",
    )
    parser.add_argument("--runs", type=_positive, default=2000, help="runs per burst (default 2000)")
    parser.add_argument("--latency-runs", type=_positive, default=200, help="sequential latency samples (default 200)")
    parser.add_argument(
        "--probe-runs", type=_positive, default=100, help="samples per cross-process latency probe (default 100)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured runs before each scenario (default 10)")
    parser.add_argument("--concurrency", type=_positive, default=100, help="Aiki worker concurrency (default 100)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SYSTEMS,
        help="run this system only; repeatable (e.g. --only aiki --only aiki-push: pull beside push)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run; repeatable (default: all)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", databases.DEFAULT_ADMIN_URL),
        help="admin connection used to create/drop the bench databases (env BENCH_PG_URL)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess (default 900)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each subprocess's stderr")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _spawn(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Run `python -m bench.run_one ...` and return its JSON; a crash becomes an error result."""
    command = [sys.executable, "-m", "bench.run_one", *extra]
    cwd = Path(__file__).resolve().parent.parent  # so `bench` is importable in the child
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {args.timeout:.0f}s"}
    if args.verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        return {"ok": False, "error": f"exit {proc.returncode}, no result; stderr tail:\n{tail}"}
    if not result["ok"] and not result.get("unavailable") and not args.verbose:
        # The end of stderr holds the traceback; -v shows all of it.
        sys.stderr.write("\n".join(proc.stderr.rstrip().splitlines()[-STDERR_TAIL_LINES:]) + "\n")
    return result


def _run_scenario(
    args: argparse.Namespace, scenario: Scenario, system: str, sqlite_dir: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    if scenario.backend == "postgres":
        meta["postgres_version"] = databases.recreate_postgres(args.pg_url, system)
        db_url = databases.postgres_url(args.pg_url, system)
    else:
        databases.reset_sqlite(sqlite_dir, system)
        db_url = databases.sqlite_url(sqlite_dir, system)
    _log(f"{scenario.name} / {system} ...")
    t0 = time.perf_counter()
    options = [
        f"--db-url={db_url}",
        f"--runs={args.runs}",
        f"--latency-runs={args.latency_runs}",
        f"--probe-runs={args.probe_runs}",
        f"--warmup={args.warmup}",
        f"--concurrency={args.concurrency}",
    ]
    result = _spawn(args, [system, scenario.name, *options])
    result.update(system=system, scenario=scenario.name, backend=scenario.backend)
    _log(f"{scenario.name} / {system}: {'ok' if result['ok'] else 'FAILED'} in {time.perf_counter() - t0:.1f}s")
    return result


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in SYSTEM_MODULES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    scenarios = [SCENARIOS[name] for name in dict.fromkeys(args.scenario or SCENARIOS)]
    systems = list(dict.fromkeys(args.only)) if args.only else list(SYSTEMS)
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }

    # Import each system once up front: an unavailable one gets one clear row, not N subprocess failures.
    unavailable: dict[str, dict[str, Any]] = {}
    for system in systems:
        check = _spawn(args, [system, "--check"])
        if not check["ok"]:
            _log(check["error"])
            unavailable[system] = check

    results: list[dict[str, Any]] = []
    sqlite_dir = Path(tempfile.mkdtemp(prefix="aiki-bench-"))
    try:
        for scenario in scenarios:
            for system in systems:
                if system not in scenario.systems:
                    continue
                if system in unavailable:
                    results.append({**unavailable[system], "system": system, "scenario": scenario.name})
                    continue
                results.append(_run_scenario(args, scenario, system, sqlite_dir, meta))
    finally:
        # Leave the shared Postgres as we found it, even after Ctrl-C.
        databases.drop_postgres(args.pg_url, list(SYSTEMS))
        shutil.rmtree(sqlite_dir, ignore_errors=True)

    runs_label = {s.name: s.size_label or f"{getattr(args, s.size_param)} runs" for s in scenarios}
    print(table(results, runs_label))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    failed = [r for r in results if not r["ok"] and not r.get("unavailable")]
    return 1 if failed else 0
