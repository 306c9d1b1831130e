"""``aiki worker``: serve the workflows a ``module:attribute`` names, against a server."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import Any

from aiki.cli.settings import CliError

log = logging.getLogger("aiki.cli")


def load_target(spec: str) -> list[Any]:
    """Resolve ``module:attr`` to workflow versions (one, a list, or a ``worker(...)``)."""
    if ":" not in spec:
        raise CliError(f"worker target {spec!r} must look like module:attribute")
    module_name, attr = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import module {module_name!r}: {exc}") from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, list | tuple):
        return list(target)
    workflows = getattr(target, "workflows", None)
    if workflows is not None:
        return list(workflows)
    return [target]


async def run_worker(
    spec: str,
    url: str,
    api_key: str | None,
    concurrency: int,
    *,
    heartbeat_interval: float | None = None,
    shutdown_grace: float = 10.0,
) -> None:
    """``aiki worker``: serve the workflows ``spec`` names against the server at ``url``, until stopped."""
    from datetime import timedelta

    from aiki.worker_sdk import AikiError, client, worker

    workflows = load_target(spec)
    try:
        definition = worker(
            workflows=workflows,
            concurrency=concurrency,
            heartbeat_interval=None if heartbeat_interval is None else timedelta(seconds=heartbeat_interval),
        )
    except ValueError as exc:
        raise CliError(f"worker {spec}: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    aiki_client = client(url=url, api_key=api_key)
    try:
        # Registration retries while the server is down or unavailable; stop may come meanwhile.
        spawning = asyncio.create_task(definition.spawn(aiki_client))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({spawning, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not spawning.done():
            spawning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spawning
            return
        try:
            handle = spawning.result()
        except AikiError as exc:  # refused: a bad or revoked key, a version it may not serve ...
            raise CliError(f"the server at {url} refused to register this worker: {exc}") from None
        log.info("worker %s serving %d workflow version(s) from %s", handle.worker_id, len(workflows), url)
        await stop.wait()
        await handle.stop(grace=timedelta(seconds=shutdown_grace))
    finally:
        await aiki_client.close()
