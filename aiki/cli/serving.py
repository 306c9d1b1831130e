"""``aiki migrate`` and ``aiki server``, and the HTTP serving both ``server`` and ``dev`` share."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

from aiki.cli.settings import CliError

SHUTDOWN_GRACE_S = 3
KEEP_ALIVE_S = 75

log = logging.getLogger("aiki.cli")


async def migrate(action: str, url: str) -> None:
    """``aiki migrate apply|status``: apply the migrations (``apply``), then print where the schema stands."""
    from aiki.platform.db import migrate
    from aiki.platform.db.engine import Database

    db = Database(url, migrate=False)
    try:
        if action == "apply":
            await migrate.upgrade(db)
        state = await migrate.status(db)
    finally:
        await db.dispose()
    print(f"database: {db.dialect}")
    print(f"current revision: {state['current'] or '(empty)'}")
    print(f"head revision:    {state['head']}")
    print("schema is up to date" if state["up_to_date"] else "migrations pending: run `aiki migrate apply`")


async def serve(
    app: Any, host: str, port: int, on_started: Any = None, on_stopping: Callable[[], None] | None = None
) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT/SIGTERM; ``on_started`` runs once it listens."""
    import uvicorn

    class _Server(uvicorn.Server):
        # We own the signals: uvicorn would re-raise them after serving, skipping our cleanup.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # Our handler and format (aiki.platform.logs) for uvicorn's records too.
        log_config=None,
        # The client address comes from X-Forwarded-For only behind a trusted proxy, which the app
        # decides (AIKI_TRUSTED_PROXIES, aiki.api.proxies); uvicorn would trust any loopback peer.
        proxy_headers=False,
        # The app's own startup/shutdown hooks (the OpenAPI touch-up, closing the OIDC client);
        # the runtime is started and stopped by this command, around the server.
        lifespan="on",
        access_log=False,
        # Parked long-polls (claims, run waits) would hold a stopping server for up to 20 s; cut
        # them off: clients retry against another replica, and nothing half-done is committed.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        # Outlive the clients' idle connections (httpx drops them after 5 s): a server closing a
        # kept-alive connection just as a client reuses it fails that request.
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    srv = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, lambda: _stop_serving(srv, on_stopping))
    # Bind here rather than in uvicorn, which answers a taken port with sys.exit from inside a task.
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise CliError(f"could not listen on {host}:{port}: {exc.strerror or exc}") from None
    serve_task = asyncio.create_task(srv.serve(sockets=[sock]))
    # uvicorn exposes readiness only as a flag.
    while not srv.started and not serve_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if serve_task.done():
        await serve_task
        raise CliError(f"could not serve on {host}:{port}")
    if on_started is not None:
        await on_started()
    await serve_task


def _stop_serving(srv: Any, on_stopping: Callable[[], None] | None) -> None:
    srv.should_exit = True
    if on_stopping is not None:
        on_stopping()


def iam_config(**overrides: Any) -> Any:
    """IAM settings from the environment and ``overrides``; a bad one is a :class:`CliError`."""
    from aiki.iam.config import IamConfig, IamConfigError
    from aiki.platform.domain.errors import OidcError

    try:
        return IamConfig.from_env(**overrides)
    except (IamConfigError, OidcError) as exc:  # both name the variable to fix
        raise CliError(str(exc)) from None


def require_mail(iam: Any) -> None:
    """Refuse settings that would create accounts nobody can verify (email verification on, no SMTP)."""
    from aiki.iam.config import IamConfigError

    try:
        iam.require_mail()
    except IamConfigError as exc:
        raise CliError(str(exc)) from None


def mail_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--email-verification`` and ``--email-from`` as ``IamConfig`` overrides (flags win over env)."""
    flags: dict[str, Any] = {}
    if args.email_verification is not None:
        flags["email_verification"] = args.email_verification == "on"
    if args.email_from is not None:
        flags["email_from"] = args.email_from
    return flags


async def run_server(
    url: str,
    host: str,
    port: int,
    *,
    pool_size: int = 20,
    pool_timeout: float = 10.0,
    redis_url: str | None = None,
    pg_listen: bool = True,
    lease: tuple[Any, Any] | None = None,
    trusted_proxies: str | None = None,
    endpoints_allow_private: bool = False,
    iam_overrides: dict[str, Any] | None = None,
) -> None:
    """``aiki server``: the standalone server with IAM, until stopped."""
    from datetime import timedelta

    from aiki.api.server import server
    from aiki.platform.db.engine import ConfigurationError, Database

    lease_ttl, heartbeat_interval = lease or (timedelta(seconds=30), None)
    iam = iam_config(**(iam_overrides or {}))
    require_mail(iam)
    aiki_server = server(
        db=Database(url, pool_size=pool_size, pool_timeout=pool_timeout),
        iam=iam,
        redis_url=redis_url,
        trusted_proxies=trusted_proxies,
        pg_listen=pg_listen,
        lease_ttl=lease_ttl,
        heartbeat_interval=heartbeat_interval,
        endpoints_allow_private=endpoints_allow_private,
    )
    try:
        await aiki_server.runtime.start()
    except ConfigurationError as exc:
        await aiki_server.db.dispose()
        raise CliError(str(exc)) from None
    log.info("Aiki server on http://%s:%d (API /api/v1, OpenAPI /schema/openapi.json)", host, port)
    try:
        await serve(aiki_server.handler, host, port, on_stopping=aiki_server.begin_shutdown)
    finally:
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()
