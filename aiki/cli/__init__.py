"""The ``aiki`` command: ``migrate``, ``server``, ``dev`` and ``worker``.

Configuration comes from the environment (``DATABASE_URL``, ``AIKI_SECRET_KEY``,
``AIKI_SECRET_KEY_PREVIOUS`` (while rotating the secret; no flag: secrets stay out of ``ps``), ``AIKI_BASE_URL``,
``AIKI_HOST``, ``AIKI_PORT``, ``AIKI_LOG_LEVEL``, ``AIKI_API_KEY``, ``REDIS_URL``, ``AIKI_PG_LISTEN``,
``AIKI_DB_POOL_SIZE``, ``AIKI_DB_POOL_TIMEOUT``, ``AIKI_LEASE_TTL``, ``AIKI_HEARTBEAT_INTERVAL``,
``AIKI_SHUTDOWN_GRACE``, ``AIKI_LOG_FORMAT``, ``AIKI_TRUSTED_PROXIES``, ``AIKI_API_RATE_LIMIT``,
``AIKI_SMTP_URL``, ``AIKI_EMAIL_FROM``, ``AIKI_EMAIL_VERIFICATION``, ``AIKI_ENDPOINTS_ALLOW_PRIVATE``);
flags override it. ``aiki server``
refuses to start with email verification on (the default) and no ``AIKI_SMTP_URL``; ``aiki dev``
then writes the mail it would send (links included) to its log.
A missing or malformed setting stops the command with a
one-line message naming the flag or variable, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from aiki.cli import settings
from aiki.cli.dev import run_dev
from aiki.cli.parser import build_parser
from aiki.cli.serving import mail_flags, migrate, run_server
from aiki.cli.settings import DEV_DATABASE_URL, CliError
from aiki.cli.worker import load_target, run_worker

__all__ = ["CliError", "build_parser", "load_target", "main"]


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
    """Run the ``aiki`` command with ``argv`` (``sys.argv`` by default); return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings.setup_logging(args.command)
        if args.command == "migrate":
            _run(migrate(args.action, settings.database_url(args.database_url, None)))
        elif args.command == "server":
            _run(_server_command(args))
        elif args.command == "dev":
            host, port = _address(args)
            url = settings.database_url(args.database_url, DEV_DATABASE_URL)
            _run(run_dev(url, host, port, not args.no_demo, mail_flags(args)))
        elif args.command == "worker":
            _run(_worker_command(args))
    except CliError as exc:
        print(f"aiki: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _address(args: argparse.Namespace) -> tuple[str, int]:
    return args.host or os.environ.get("AIKI_HOST", "127.0.0.1"), args.port or settings.env_port()


def _server_command(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    host, port = _address(args)
    url = settings.database_url(args.database_url, None)
    return run_server(
        url,
        host,
        port,
        pool_size=settings.env_pool_size(args.pool_size),
        pool_timeout=settings.pool_timeout(args.pool_timeout),
        redis_url=settings.redis_url(args.redis_url),
        pg_listen=settings.env_pg_listen(args.no_pg_listen),
        lease=settings.lease_settings(args.lease_ttl, args.heartbeat_interval),
        trusted_proxies=settings.trusted_proxies(args.trusted_proxies),
        endpoints_allow_private=settings.endpoints_allow_private(args.endpoints_allow_private),
        iam_overrides={**settings.api_rate_limit(args.api_rate_limit), **mail_flags(args)},
    )


def _worker_command(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    url = settings.worker_url(args.url)
    if args.concurrency < 1:
        raise CliError(f"--concurrency must be at least 1, got {args.concurrency}")
    return run_worker(
        args.target,
        url,
        args.api_key or os.environ.get("AIKI_API_KEY"),
        args.concurrency,
        heartbeat_interval=settings.seconds(
            args.heartbeat_interval, "--heartbeat-interval", "AIKI_HEARTBEAT_INTERVAL", None
        ),
        shutdown_grace=settings.grace(args.shutdown_grace),
    )
