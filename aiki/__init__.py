"""Aiki: durable execution for async Python.

Workflows are plain async functions; the platform persists every task, survives crashes, waits
for events and timers without holding a worker, and retries.

Example:
    >>> from aiki import Run, task, workflow
    >>> @task(name="greet")
    ... async def greet(name: str) -> str:
    ...     return f"hello {name}"
    >>> hello = workflow(name="hello")
    >>> @hello.v("1.0.0")
    ... async def hello_v1(run: Run, name: str) -> str:
    ...     return await greet.start(run, name)

``server`` and ``database`` need the ``aiki[server]`` extra; everything else is the SDK, which
needs only ``httpx`` and ``msgspec``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiki.worker_sdk import *  # noqa: F403 - the SDK's public names are ours
from aiki.worker_sdk import __all__ as _sdk_all

if TYPE_CHECKING:
    from aiki.api.server import AikiServer as AikiServer
    from aiki.api.server import server as server
    from aiki.platform.db.engine import Database as Database
    from aiki.platform.db.engine import database as database

_SERVER_NAMES = {
    "AikiServer": ("aiki.api.server", "AikiServer"),
    "server": ("aiki.api.server", "server"),
    "Database": ("aiki.platform.db.engine", "Database"),
    "database": ("aiki.platform.db.engine", "database"),
}


def __getattr__(name: str) -> Any:
    # Server names load on first use, so a worker host without the server extra imports nothing of it.
    if name in _SERVER_NAMES:
        import importlib

        module, attr = _SERVER_NAMES[name]
        try:
            value = getattr(importlib.import_module(module), attr)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(f"aiki.{name} needs the server extra: pip install 'aiki[server]' ({exc})") from exc
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aiki' has no attribute {name!r}")


__all__ = sorted([*_sdk_all, *_SERVER_NAMES])
