"""A worker process for the end-to-end tests: an embedded server plus a worker on one database.

    python -m tests.e2e.worker_proc --db-url postgresql://... --ready-file F --workflows five,three

It starts the server runtime (timers, lease recovery, LISTEN/NOTIFY) on the shared PostgreSQL
database, spawns a worker serving the named workflows (see ``tests/e2e/workflows.py``), then
writes its pid to ``--ready-file`` (atomically) so the test knows the versions are registered.
SIGTERM or SIGINT stop it cleanly: the worker, then the runtime, then the database; exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from aiki import client, database, server, worker
from tests.e2e.workflows import WORKFLOWS

log = logging.getLogger("aiki.e2e.worker_proc")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker_proc")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--workflows", required=True, help="comma-separated keys of workflows.WORKFLOWS")
    parser.add_argument("--lease-ttl", type=float, default=30.0, help="seconds")
    parser.add_argument("--max-recoveries", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--pool-size",
        type=int,
        default=5,
        help="database connections (doubled on overflow): stay "
        "well under PostgreSQL's max_connections with several processes",
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-http", action="store_true", help="log every API request (httpx, INFO)")
    parser.add_argument("--parent-pid", type=int, default=None, help="die with this process (Linux)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    versions = [WORKFLOWS[key] for key in args.workflows.split(",")]
    aiki_server = server(
        db=database(url=args.db_url, migrate=False, pool_size=args.pool_size),
        lease_ttl=timedelta(seconds=args.lease_ttl),
        max_recoveries=args.max_recoveries,
    )
    log.info("starting the server runtime")
    await aiki_server.runtime.start()
    log.info("runtime started; registering the worker")
    aiki_client = client(handler=aiki_server.handler)
    try:
        handle = await worker(workflows=versions, concurrency=args.concurrency).spawn(aiki_client)
        try:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(f"{os.getpid()}\n")
            tmp.replace(args.ready_file)
            log.info("worker %s ready (pid %d)", handle.worker_id, os.getpid())
            await stop.wait()
            log.info("stopping")
        finally:
            await handle.stop(grace=timedelta(seconds=2))
    finally:
        await aiki_server.runtime.stop()
        await aiki_client.close()
        await aiki_server.db.dispose()


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the test process dies, so no worker outlives its test."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(3)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s [pid {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    if not args.log_http:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    log.info("process up, serving %s", args.workflows)
    asyncio.run(serve(args))
    log.info("stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
