"""The ``aiki`` command's arguments."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    """The ``aiki`` command line: its sub-commands and their flags."""
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
                "--endpoints-allow-private",
                action="store_true",
                help="let push endpoints have URLs resolving to loopback/private/link-local addresses "
                "(refused otherwise); or AIKI_ENDPOINTS_ALLOW_PRIVATE=1. `aiki dev` always allows them",
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
