"""A process of the duplicate-start test: starts every reference id several times at once.

    python -m tests.chaos.starter --urls URL,URL --refs 50 --copies 5 --ready-file F --go-file G --out O

It opens a client per server (API key from ``$AIKI_API_KEY``), writes ``--ready-file``, waits for
``--go-file`` (so the processes start together), then sends ``refs x copies`` starts of
``chaos-plain`` at once, reference ``dedup-<i>`` with input ``i``, spread over the servers. Each
answer is one JSON line in ``--out``: the reference, the run id, whether it was created, and the
503s retried on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiki import client
from aiki.worker_sdk.errors import ServerUnavailableError
from aiki.worker_sdk.protocol import StartRunRequest
from tests.chaos.workload import plain_v1


async def main(args: argparse.Namespace) -> None:
    clients = [client(url=url, api_key=os.environ["AIKI_API_KEY"]) for url in args.urls.split(",")]
    args.ready_file.write_text("ready\n")
    deadline = time.monotonic() + 60
    while not args.go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 60 s")
        await asyncio.sleep(0.005)

    async def start(ref: int, copy: int) -> dict[str, Any]:
        api = clients[(ref + copy) % len(clients)]
        request = StartRunRequest(
            workflow=plain_v1.name, version=plain_v1.version, input=ref, reference_id=f"dedup-{ref}"
        )
        retried = 0
        while True:
            try:
                answer = await api.start_run(request)
            except ServerUnavailableError:
                # A busy server may shed load (503); the start is idempotent, so ask again.
                retried += 1
                await asyncio.sleep(0.1 * retried)
                continue
            return {"ref": ref, "run_id": answer.run.id, "created": answer.created, "retried": retried}

    try:
        answers = await asyncio.gather(*(start(r, c) for c in range(args.copies) for r in range(args.refs)))
    finally:
        for api in clients:
            await api.close()
    args.out.write_text("".join(json.dumps(a) + "\n" for a in answers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="starter")
    parser.add_argument("--urls", required=True)
    parser.add_argument("--refs", type=int, required=True)
    parser.add_argument("--copies", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--go-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
