"""The ``aiki`` command's settings: flags and environment variables, read and checked.

A missing or malformed setting raises :class:`CliError` naming the flag or variable to fix.
"""

from __future__ import annotations

import logging
import os
from typing import Any

DEFAULT_PORT = 9850
DEV_DATABASE_URL = "sqlite+aiosqlite:///aiki.db"
API_RATE_LIMIT_ENV = "AIKI_API_RATE_LIMIT"


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def env_port() -> int:
    """``AIKI_PORT`` (else 9850), checked."""
    raw = os.environ.get("AIKI_PORT", str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        raise CliError(f"AIKI_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise CliError(f"AIKI_PORT must be between 1 and 65535, got {port}")
    return port


def env_pool_size(arg: int | None) -> int:
    """``--pool-size``/``AIKI_DB_POOL_SIZE`` (else 20): the most database connections, at least 1."""
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


def seconds(arg: float | None, flag: str, env: str, default: float | None) -> float | None:
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


def lease_settings(ttl_arg: float | None, hb_arg: float | None) -> tuple[Any, Any]:
    """``server(lease_ttl=..., heartbeat_interval=...)`` from the flags and environment, checked."""
    from datetime import timedelta

    from aiki.api.server import lease_settings_ms

    ttl_s = seconds(ttl_arg, "--lease-ttl", "AIKI_LEASE_TTL", 30.0)
    hb_s = seconds(hb_arg, "--heartbeat-interval", "AIKI_HEARTBEAT_INTERVAL", None)
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


def pool_timeout(arg: float | None) -> float:
    """``--pool-timeout``/``AIKI_DB_POOL_TIMEOUT`` (else 10): seconds a request waits for a connection."""
    value = seconds(arg, "--pool-timeout", "AIKI_DB_POOL_TIMEOUT", 10.0)
    assert value is not None
    return value


def worker_url(arg: str | None) -> str:
    """``--url``/``AIKI_URL`` (else the local server): the server a worker talks to, an http(s) URL."""
    url = arg or os.environ.get("AIKI_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        name = "--url" if arg else "AIKI_URL"
        raise CliError(f"{name} must be the server's http(s) URL, like http://127.0.0.1:{DEFAULT_PORT}, got {url!r}")
    return url


def grace(arg: float | None) -> float:
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


def env_pg_listen(no_listen: bool) -> bool:
    """Whether to LISTEN for PostgreSQL wake-ups: not with ``--no-pg-listen`` or ``AIKI_PG_LISTEN=0``."""
    if no_listen:
        return False
    raw = os.environ.get("AIKI_PG_LISTEN", "1").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise CliError(f"AIKI_PG_LISTEN must be 1 or 0, got {raw!r}")


def redis_url(arg: str | None) -> str | None:
    """``--redis-url``/``REDIS_URL``, if set: a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    url = arg or os.environ.get("REDIS_URL") or None
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"REDIS_URL must look like redis://host:6379/0, got {url!r}")
    return url


def database_url(arg: str | None, default: str | None) -> str:
    """``--database-url``/``DATABASE_URL`` (else ``default``), checked to name a database Aiki supports."""
    url = arg or os.environ.get("DATABASE_URL") or default
    if not url:
        raise CliError("DATABASE_URL is not set: give a PostgreSQL URL (postgresql://user@host/db) or --database-url")
    from aiki.platform.db.engine import ConfigurationError, normalize_url

    try:
        normalize_url(url)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    return url


def setup_logging(command: str) -> None:
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


def trusted_proxies(arg: str | None) -> str | None:
    """``--trusted-proxies``/``AIKI_TRUSTED_PROXIES``: IPs/CIDRs, comma-separated; checked."""
    from aiki.api.proxies import TRUSTED_PROXIES_ENV, TrustedProxies

    name = "--trusted-proxies" if arg is not None else TRUSTED_PROXIES_ENV
    raw = arg if arg is not None else os.environ.get(TRUSTED_PROXIES_ENV, "")
    try:
        TrustedProxies.parse(raw, name=name)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return raw.strip() or None


def api_rate_limit(arg: str | None) -> dict[str, Any]:
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


def endpoints_allow_private(flag: bool) -> bool:
    """``--endpoints-allow-private``/``AIKI_ENDPOINTS_ALLOW_PRIVATE`` (``1``/``true`` or ``0``/``false``)."""
    if flag:
        return True
    raw = os.environ.get("AIKI_ENDPOINTS_ALLOW_PRIVATE", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise CliError(f"AIKI_ENDPOINTS_ALLOW_PRIVATE must be 1/true or 0/false, got {raw!r}")
