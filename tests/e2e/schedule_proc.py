"""A server process whose runtime fires schedules on a fast fake clock (for tests/e2e/test_schedules.py).

The clock reads ``start_ms`` until the test writes the go file (a wall time ``go_at``, which this
process shifts by its ``--lag``), then runs ``speed`` times faster than real time, and stops at
``end_ms``. The test writes the go file once every process is ready, so a slow start (a loaded
machine) does not eat into the run. Once the clock reached ``end_ms`` and one more firing pass is
done, the process writes its done file; it runs until SIGTERM (or until its parent is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import time
from pathlib import Path

from aiki.api.server import AikiServer
from aiki.platform.db.engine import Database
from aiki.platform.domain.settings import Settings
from aiki.platform.services.schedules import fire_due


class FastClock:
    def __init__(self, start_ms: int, end_ms: int, speed: float) -> None:
        self.start_ms, self.end_ms, self.speed = start_ms, end_ms, speed
        self.go_at = math.inf  # stopped until the go file says when to start

    def __call__(self) -> int:
        elapsed = max(0.0, time.time() - self.go_at)
        return min(self.end_ms, self.start_ms + int(elapsed * 1000 * self.speed))


def _touch(path: str) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def _go_at(go_file: Path) -> float:
    """The wall time the test said the clocks start at (infinity: not said yet)."""
    return float(go_file.read_text()) if go_file.exists() else math.inf


async def main(args: argparse.Namespace) -> None:
    db = Database(args.db_url, migrate=False, pool_size=5)
    aiki_server = AikiServer(db, Settings(timer_poll_ms=20))
    clock = FastClock(args.start_ms, args.end_ms, args.speed)
    go_file = Path(args.go_file)
    aiki_server.services.clock = clock
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await aiki_server.runtime.start()
    _touch(args.ready_file)
    done = False
    try:
        while not stop.is_set():
            if clock.go_at == math.inf:
                clock.go_at = _go_at(go_file) + args.lag
            if not done and clock() >= args.end_ms:
                # The loop has seen the end of time; one more pass makes sure nothing is left here.
                await fire_due(aiki_server.services, args.end_ms)
                _touch(args.done_file)
                done = True
            if os.getppid() != args.parent_pid:
                break
            await asyncio.sleep(0.05)
    finally:
        await aiki_server.runtime.stop()
        await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--done-file", required=True)
    parser.add_argument("--start-ms", type=int, required=True)
    parser.add_argument("--end-ms", type=int, required=True)
    parser.add_argument("--go-file", required=True)
    parser.add_argument("--lag", type=float, default=0.0)
    parser.add_argument("--speed", type=float, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    asyncio.run(main(parser.parse_args()))
