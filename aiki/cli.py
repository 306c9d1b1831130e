"""The ``aiki`` command: ``migrate``, ``server``, ``dev`` and ``worker``.

Configuration comes from the environment (``DATABASE_URL``, ``AIKI_SECRET_KEY``,
``AIKI_SECRET_KEY_PREVIOUS`` (while rotating the secret; no flag: secrets stay out of ``ps``), ``AIKI_BASE_URL``,
``AIKI_HOST``, ``AIKI_PORT``, ``AIKI_LOG_LEVEL``, ``AIKI_API_KEY``, ``REDIS_URL``, ``AIKI_PG_LISTEN``,
``AIKI_DB_POOL_SIZE``, ``AIKI_DB_POOL_TIMEOUT``, ``AIKI_LEASE_TTL``, ``AIKI_HEARTBEAT_INTERVAL``,
``AIKI_SHUTDOWN_GRACE``, ``AIKI_LOG_FORMAT``, ``AIKI_TRUSTED_PROXIES``, ``AIKI_API_RATE_LIMIT``,
``AIKI_SMTP_URL``, ``AIKI_EMAIL_FROM``, ``AIKI_EMAIL_VERIFICATION``); flags override it. ``aiki server``
refuses to start with email verification on (the default) and no ``AIKI_SMTP_URL``; ``aiki dev``
then writes the mail it would send (links included) to its log.
A missing or malformed setting stops the command with a
one-line message naming the flag or variable, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

DEFAULT_PORT = 9850
DEV_DATABASE_URL = "sqlite+aiosqlite:///aiki.db"
SHUTDOWN_GRACE_S = 3
KEEP_ALIVE_S = 75

log = logging.getLogger("aiki.cli")


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _env_port() -> int:
    raw = os.environ.get("AIKI_PORT", str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        raise CliError(f"AIKI_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise CliError(f"AIKI_PORT must be between 1 and 65535, got {port}")
    return port


def _env_pool_size(arg: int | None) -> int:
    if arg is not None:
        if arg < 1:
            raise CliError(f"--pool-size must be at least 1, got {arg}")
        return arg
    raw = os.environ.get("AIKI_DB_POOL_SIZE", "20")
    try:
        size = int(raw)
    except ValueError:
        raise CliError(f"AIKI_DB_POOL_SIZE must be a number, got {raw!r}") from None
    if size < 1:
        raise CliError(f"AIKI_DB_POOL_SIZE must be at least 1, got {size}")
    return size


def _seconds(arg: float | None, flag: str, env: str, default: float | None) -> float | None:
    """A duration in seconds from ``flag`` or else ``$env`` (else ``default``); must be positive."""
    if arg is not None:
        value, name = arg, flag
    else:
        raw = os.environ.get(env, "").strip()
        if not raw:
            return default
        name = env
        try:
            value = float(raw)
        except ValueError:
            raise CliError(f"{env} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise CliError(f"{name} must be a positive number of seconds, got {value:g}")
    return value


def _lease_settings(ttl_arg: float | None, hb_arg: float | None) -> tuple[Any, Any]:
    """``server(lease_ttl=..., heartbeat_interval=...)`` from the flags and environment, checked."""
    from datetime import timedelta

    from aiki.api.server import lease_settings_ms

    ttl_s = _seconds(ttl_arg, "--lease-ttl", "AIKI_LEASE_TTL", 30.0)
    hb_s = _seconds(hb_arg, "--heartbeat-interval", "AIKI_HEARTBEAT_INTERVAL", None)
    assert ttl_s is not None
    lease_ttl = timedelta(seconds=ttl_s)
    heartbeat = None if hb_s is None else timedelta(seconds=hb_s)
    try:
        lease_settings_ms(
            lease_ttl,
            heartbeat,
            ttl_name="--lease-ttl" if ttl_arg is not None else "AIKI_LEASE_TTL",
            heartbeat_name="--heartbeat-interval" if hb_arg is not None else "AIKI_HEARTBEAT_INTERVAL",
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return lease_ttl, heartbeat


def _pool_timeout(arg: float | None) -> float:
    value = _seconds(arg, "--pool-timeout", "AIKI_DB_POOL_TIMEOUT", 10.0)
    assert value is not None
    return value


def _worker_url(arg: str | None) -> str:
    url = arg or os.environ.get("AIKI_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        name = "--url" if arg else "AIKI_URL"
        raise CliError(f"{name} must be the server's http(s) URL, like http://127.0.0.1:{DEFAULT_PORT}, got {url!r}")
    return url


def _grace(arg: float | None) -> float:
    """``--shutdown-grace``/``AIKI_SHUTDOWN_GRACE``: seconds, 0 allowed (hand runs back at once)."""
    if arg is None:
        raw = os.environ.get("AIKI_SHUTDOWN_GRACE", "").strip()
        if not raw:
            return 10.0
        try:
            arg = float(raw)
        except ValueError:
            raise CliError(f"AIKI_SHUTDOWN_GRACE must be a number of seconds, got {raw!r}") from None
        name = "AIKI_SHUTDOWN_GRACE"
    else:
        name = "--shutdown-grace"
    if not 0 <= arg < float("inf"):
        raise CliError(f"{name} must be 0 or more seconds, got {arg:g}")
    return arg


def _env_pg_listen(no_listen: bool) -> bool:
    if no_listen:
        return False
    raw = os.environ.get("AIKI_PG_LISTEN", "1").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise CliError(f"AIKI_PG_LISTEN must be 1 or 0, got {raw!r}")


def _redis_url(arg: str | None) -> str | None:
    url = arg or os.environ.get("REDIS_URL") or None
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"REDIS_URL must look like redis://host:6379/0, got {url!r}")
    return url


def _database_url(arg: str | None, default: str | None) -> str:
    url = arg or os.environ.get("DATABASE_URL") or default
    if not url:
        raise CliError("DATABASE_URL is not set: give a PostgreSQL URL (postgresql://user@host/db) or --database-url")
    from aiki.platform.db.engine import ConfigurationError, normalize_url

    try:
        normalize_url(url)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    return url


def _setup_logging(command: str) -> None:
    """``AIKI_LOG_LEVEL`` and ``AIKI_LOG_FORMAT`` (``json`` for ``aiki server``, else ``text``):
    every logged value escaped, one line per record (``aiki.platform.logs``)."""
    from aiki.platform import logs

    level = os.environ.get("AIKI_LOG_LEVEL", "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise CliError(f"AIKI_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got {level!r}")
    try:
        log_format = logs.parse_log_format(
            os.environ.get(logs.LOG_FORMAT_ENV), "json" if command == "server" else "text"
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    logs.configure(level, log_format)
    # One line per HTTP request from the in-process client would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic narrates every migration context at INFO; only say it when asked (DEBUG).
    if level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _trusted_proxies(arg: str | None) -> str | None:
    """``--trusted-proxies``/``AIKI_TRUSTED_PROXIES``: IPs/CIDRs, comma-separated; checked."""
    from aiki.api.proxies import TRUSTED_PROXIES_ENV, TrustedProxies

    name = "--trusted-proxies" if arg is not None else TRUSTED_PROXIES_ENV
    raw = arg if arg is not None else os.environ.get(TRUSTED_PROXIES_ENV, "")
    try:
        TrustedProxies.parse(raw, name=name)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return raw.strip() or None


API_RATE_LIMIT_ENV = "AIKI_API_RATE_LIMIT"


def _api_rate_limit(arg: str | None) -> dict[str, Any]:
    """``--api-rate-limit``/``AIKI_API_RATE_LIMIT``: requests per API key and minute (``0`` or
    ``off``: no limit), as an ``IamConfig`` override; unset keeps the default (30,000)."""
    name = "--api-rate-limit" if arg is not None else API_RATE_LIMIT_ENV
    raw = (arg if arg is not None else os.environ.get(API_RATE_LIMIT_ENV, "")).strip().lower()
    if not raw:
        return {}
    if raw == "off":
        return {"api_requests_per_minute": None}
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise CliError(f"{name} must be a number of requests per API key and minute (0 or off: no limit), got {raw!r}")
    return {"api_requests_per_minute": value or None}


# -- migrate ---------------------------------------------------------------------------------


async def _migrate(action: str, url: str) -> None:
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


# -- server / dev ----------------------------------------------------------------------------


async def _serve(
    app: Any, host: str, port: int, on_started: Any = None, on_stopping: Callable[[], None] | None = None
) -> None:
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


def _iam_config(**overrides: Any) -> Any:
    from aiki.iam.config import IamConfig, IamConfigError
    from aiki.platform.domain.errors import OidcError

    try:
        return IamConfig.from_env(**overrides)
    except (IamConfigError, OidcError) as exc:  # both name the variable to fix
        raise CliError(str(exc)) from None


def _require_mail(iam: Any) -> None:
    from aiki.iam.config import IamConfigError

    try:
        iam.require_mail()
    except IamConfigError as exc:
        raise CliError(str(exc)) from None


def _mail_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--email-verification`` and ``--email-from`` as ``IamConfig`` overrides (flags win over env)."""
    flags: dict[str, Any] = {}
    if args.email_verification is not None:
        flags["email_verification"] = args.email_verification == "on"
    if args.email_from is not None:
        flags["email_from"] = args.email_from
    return flags


def _dev_secret(url: str) -> str:
    """``AIKI_SECRET_KEY``, or a random secret kept beside the dev database (keys survive restarts).

    One per checkout, made on first start with mode 0600 and never printed; ``.gitignore`` keeps
    ``*.secret`` and ``.aiki-dev-secret`` out of git (``aiki.iam.server_secret.secret_file``).
    """
    from pathlib import Path

    from aiki.iam.server_secret import secret_file

    if os.environ.get("AIKI_SECRET_KEY"):
        return os.environ["AIKI_SECRET_KEY"]
    _, _, path = url.partition(":///")
    target = (
        Path(f"{path}.secret") if url.startswith("sqlite") and path and path != ":memory:" else Path(".aiki-dev-secret")
    )
    try:
        return secret_file(target)
    except (OSError, ValueError) as exc:
        raise CliError(f"the dev secret file {target}: {exc}") from None


async def _server(
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
    iam_overrides: dict[str, Any] | None = None,
) -> None:
    from datetime import timedelta

    from aiki.api.server import server
    from aiki.platform.db.engine import ConfigurationError, Database

    lease_ttl, heartbeat_interval = lease or (timedelta(seconds=30), None)
    iam = _iam_config(**(iam_overrides or {}))
    _require_mail(iam)
    aiki_server = server(
        db=Database(url, pool_size=pool_size, pool_timeout=pool_timeout),
        iam=iam,
        redis_url=redis_url,
        trusted_proxies=trusted_proxies,
        pg_listen=pg_listen,
        lease_ttl=lease_ttl,
        heartbeat_interval=heartbeat_interval,
    )
    try:
        await aiki_server.runtime.start()
    except ConfigurationError as exc:
        await aiki_server.db.dispose()
        raise CliError(str(exc)) from None
    log.info("Aiki server on http://%s:%d (API /api/v1, OpenAPI /schema/openapi.json)", host, port)
    try:
        await _serve(aiki_server.handler, host, port, on_stopping=aiki_server.begin_shutdown)
    finally:
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()


async def _dev(url: str, host: str, port: int, demo: bool, mail: dict[str, Any] | None = None) -> None:
    from aiki.api.server import server
    from aiki.dev_examples import EXAMPLE_WORKFLOWS, start_demo_runs
    from aiki.iam.keys import replace_server_key
    from aiki.platform.db.engine import Database
    from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
    from aiki.worker_sdk import client, worker

    base_url = os.environ.get("AIKI_BASE_URL") or f"http://{host}:{port}"
    iam = _iam_config(
        secret_key=_dev_secret(url),
        base_url=base_url,
        # Dev serves plain http on localhost: a Secure cookie would never come back.
        secure_cookies=base_url.startswith("https://"),
        claim_default_organization=True,
        **(mail or {}),
    )
    aiki_server = server(db=Database(url), iam=iam)
    await aiki_server.runtime.start()
    assert aiki_server.iam is not None
    if iam.smtp_url is None:
        from aiki.iam.mail import LogMailer

        # A developer's own machine: the verification link goes to the log instead of a mailbox.
        aiki_server.iam.mailer = LogMailer()
    # The in-process example worker authenticates like any other: a worker key of `default`.
    dev_key = await replace_server_key(aiki_server.iam, DEFAULT_NAMESPACE_ID, "aiki dev worker", "worker")
    aiki_client = client(handler=aiki_server.handler, api_key=dev_key.key)
    worker_handle = await worker(workflows=list(EXAMPLE_WORKFLOWS), concurrency=20).spawn(aiki_client)

    async def started() -> None:
        print(f"\n  Aiki dev server: http://{host}:{port}   (database: {url})")
        print(f"  Dashboard:       http://{host}:{port}/ui/   (sign up there: the first account owns `default`)")
        print(f"  OpenAPI:         http://{host}:{port}/schema/openapi.json")
        print("  IAM is on. Or sign up from a shell (the first account owns `default`, where the examples run):")
        print(f"    curl -s -c cookies.txt -X POST http://{host}:{port}/api/v1/auth/signup \\")
        body = '{"email": "you@example.com", "password": "choose-a-password"}'
        print(f"      -H 'content-type: application/json' -d '{body}'")
        if iam.email_verification and iam.smtp_url is None:
            print("  No AIKI_SMTP_URL: verification links are written to this log (look for 'mail not sent');")
            print("  POST the token to /api/v1/auth/verify-email (or open the link) to sign in.")
        print(
            "  then create API keys with POST /api/v1/namespaces/{namespace_id}/api-keys "
            f"(with -b cookies.txt -H 'origin: {base_url}': a session's unsafe requests come from our origin)."
        )
        print(f"  Dev worker key (namespace default, role worker; replaced at every start): {dev_key.key}")
        print(
            "  An in-process worker serves the example workflows: "
            + ", ".join(f"{v.name}@{v.version}" for v in EXAMPLE_WORKFLOWS)
        )
        print("  Start a run:")
        print(
            f"    curl -s -X POST http://{host}:{port}/api/v1/runs -H 'content-type: application/json' "
            f"-H 'authorization: Bearer {dev_key.key}' \\"
        )
        print(
            '      -d \'{"workflow": "subscription-trial", "version": "1.0.0", '
            '"input": {"user_id": "u1", "trial_period": "PT5S"}}\''
        )
        print(f"  List runs:  curl -s -H 'authorization: Bearer {dev_key.key}' http://{host}:{port}/api/v1/runs\n")
        if demo:
            ids = await start_demo_runs(aiki_client)
            print(f"  Started {len(ids)} demo runs: " + ", ".join(ids) + "\n")

    try:
        await _serve(aiki_server.handler, host, port, on_started=started, on_stopping=aiki_server.begin_shutdown)
    finally:
        await worker_handle.stop()
        await aiki_client.close()
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()


# -- worker ----------------------------------------------------------------------------------


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


async def _worker(
    spec: str,
    url: str,
    api_key: str | None,
    concurrency: int,
    *,
    heartbeat_interval: float | None = None,
    shutdown_grace: float = 10.0,
) -> None:
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


# -- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiki", description="Aiki: durable execution for async Python")
    sub = parser.add_subparsers(dest="command", required=True)

    mig = sub.add_parser("migrate", help="apply or inspect database migrations")
    mig.add_argument("action", choices=["apply", "status"])
    mig.add_argument("--database-url", help="defaults to $DATABASE_URL")

    for name, help_text in (
        ("server", "run the standalone API server (port 9850)"),
        ("dev", "run the server on SQLite with the example workflows on an in-process worker"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default=None, help="defaults to $AIKI_HOST or 127.0.0.1")
        p.add_argument("--port", type=int, default=None, help="defaults to $AIKI_PORT or 9850")
        p.add_argument(
            "--database-url",
            help="defaults to $DATABASE_URL" + (" or sqlite aiki.db" if name == "dev" else ""),
        )
        p.add_argument(
            "--email-verification",
            choices=["on", "off"],
            default=None,
            help="mail a link that new accounts must follow before they can act; defaults to "
            "$AIKI_EMAIL_VERIFICATION or on (then `aiki server` needs $AIKI_SMTP_URL, which is read from "
            "the environment only: it may hold a password)",
        )
        p.add_argument("--email-from", default=None, help="sender of mail; defaults to $AIKI_EMAIL_FROM")
        if name == "dev":
            p.add_argument("--no-demo", action="store_true", help="do not start demo runs")
        else:
            p.add_argument(
                "--redis-url",
                default=None,
                help="defaults to $REDIS_URL; also carry wake-ups between server processes over Redis pub/sub",
            )
            p.add_argument(
                "--no-pg-listen",
                action="store_true",
                help="do not LISTEN for PostgreSQL wake-ups (or AIKI_PG_LISTEN=0); use with --redis-url",
            )
            p.add_argument(
                "--pool-size",
                type=int,
                default=None,
                help="the most database connections of this process, all uses together (the LISTEN "
                "connection is one of them); defaults to $AIKI_DB_POOL_SIZE or 20",
            )
            p.add_argument(
                "--pool-timeout",
                type=float,
                default=None,
                metavar="SECONDS",
                help="how long a request waits for a free connection before it is answered 503; "
                "defaults to $AIKI_DB_POOL_TIMEOUT or 10",
            )
            p.add_argument(
                "--lease-ttl",
                type=float,
                default=None,
                metavar="SECONDS",
                help="how long a crashed worker's runs wait before another worker gets them; "
                "defaults to $AIKI_LEASE_TTL or 30",
            )
            p.add_argument(
                "--heartbeat-interval",
                type=float,
                default=None,
                metavar="SECONDS",
                help="how often workers heartbeat, at most half the lease TTL; "
                "defaults to $AIKI_HEARTBEAT_INTERVAL or a third of the lease TTL",
            )
            p.add_argument(
                "--trusted-proxies",
                default=None,
                metavar="IPS",
                help="comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For names the client; "
                "defaults to $AIKI_TRUSTED_PROXIES or none (the header is ignored)",
            )
            p.add_argument(
                "--api-rate-limit",
                default=None,
                metavar="PER_MINUTE",
                help="requests allowed per API key and minute, 0 or off for no limit; "
                "defaults to $AIKI_API_RATE_LIMIT or 30000",
            )

    wk = sub.add_parser("worker", help="run a worker for the workflows at module:attr")
    wk.add_argument("target", help="module:attr naming a workflow version, a list of them, or a worker")
    wk.add_argument("--url", default=None, help="server URL, defaults to $AIKI_URL or http://127.0.0.1:9850")
    wk.add_argument("--api-key", default=None, help="defaults to $AIKI_API_KEY")
    wk.add_argument("--concurrency", type=int, default=10)
    wk.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heartbeat more often than the server asks; defaults to $AIKI_HEARTBEAT_INTERVAL or the server's",
    )
    wk.add_argument(
        "--shutdown-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight runs may go on before they are handed back to the server; "
        "defaults to $AIKI_SHUTDOWN_GRACE or 10",
    )
    return parser


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the command's coroutine on uvloop when it is installed (the server extra brings it)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _setup_logging(args.command)
        if args.command == "migrate":
            _run(_migrate(args.action, _database_url(args.database_url, None)))
        elif args.command in ("server", "dev"):
            host = args.host or os.environ.get("AIKI_HOST", "127.0.0.1")
            port = args.port or _env_port()
            if args.command == "server":
                _run(
                    _server(
                        _database_url(args.database_url, None),
                        host,
                        port,
                        pool_size=_env_pool_size(args.pool_size),
                        pool_timeout=_pool_timeout(args.pool_timeout),
                        redis_url=_redis_url(args.redis_url),
                        pg_listen=_env_pg_listen(args.no_pg_listen),
                        lease=_lease_settings(args.lease_ttl, args.heartbeat_interval),
                        trusted_proxies=_trusted_proxies(args.trusted_proxies),
                        iam_overrides={**_api_rate_limit(args.api_rate_limit), **_mail_flags(args)},
                    )
                )
            else:
                _run(
                    _dev(
                        _database_url(args.database_url, DEV_DATABASE_URL),
                        host,
                        port,
                        not args.no_demo,
                        _mail_flags(args),
                    )
                )
        elif args.command == "worker":
            url = _worker_url(args.url)
            if args.concurrency < 1:
                raise CliError(f"--concurrency must be at least 1, got {args.concurrency}")
            _run(
                _worker(
                    args.target,
                    url,
                    args.api_key or os.environ.get("AIKI_API_KEY"),
                    args.concurrency,
                    heartbeat_interval=_seconds(
                        args.heartbeat_interval, "--heartbeat-interval", "AIKI_HEARTBEAT_INTERVAL", None
                    ),
                    shutdown_grace=_grace(args.shutdown_grace),
                )
            )
    except CliError as exc:
        print(f"aiki: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
