"""``server(...)``: the embeddable Aiki server — an ASGI handler and a background runtime."""

from __future__ import annotations

import os
from datetime import timedelta

from litestar import Litestar

from aiki.api.proxies import TrustedProxies
from aiki.iam.config import IamConfig
from aiki.iam.context import Iam
from aiki.platform.db.engine import DEFAULT_URL, Database
from aiki.platform.domain.settings import Settings
from aiki.platform.runtime.runtime import Runtime
from aiki.platform.secret_box import SecretBox
from aiki.platform.services.context import Services


class AikiServer:
    """An Aiki server: mount :attr:`handler` in any ASGI server and start :attr:`runtime`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        iam: IamConfig | None = None,
        *,
        pg_listen: bool = True,
        redis_url: str | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.services = Services(db, settings)
        keys = iam.secret_keys if iam is not None else _env_secret_keys()
        if keys:
            # Seals push endpoints' signing secrets (without a key, endpoints cannot be registered).
            self.services.secret_box = SecretBox(keys[0], keys[1] if len(keys) > 1 else None)
        self.iam = Iam(db, iam) if iam is not None else None
        self.handler: Litestar = _create_app(self.services, self.iam, trusted_proxies)
        self.runtime = Runtime(self.services, pg_listen=pg_listen, redis_url=redis_url)

    def begin_shutdown(self) -> None:
        """The ASGI server is stopping: parked long-polls (claims, watches, run waits) answer now,
        empty, instead of being cancelled at the end of the graceful-shutdown period (a traceback
        each, and an error for the client rather than an empty answer to retry elsewhere)."""
        self.services.hub.close()


def _create_app(services: Services, iam: Iam | None, trusted_proxies: TrustedProxies | None) -> Litestar:
    from aiki.api.app import create_app

    return create_app(services, iam=iam, trusted_proxies=trusted_proxies)


MAX_SLEEP_HOLD = timedelta(seconds=30)


def server(
    db: Database | None = None,
    *,
    lease_ttl: timedelta = timedelta(seconds=30),
    heartbeat_interval: timedelta | None = None,
    max_recoveries: int = 10,
    max_payload_bytes: int = 1_048_576,
    stall_after: timedelta | None = None,
    sleep_hold_max: timedelta = timedelta(seconds=1),
    iam: IamConfig | None = None,
    redis_url: str | None = None,
    pg_listen: bool = True,
    trusted_proxies: str | list[str] | None = None,
    endpoints_allow_private: bool | None = None,
) -> AikiServer:
    """Create an Aiki server over a database.

    Args:
        db: where state lives; ``database()`` (SQLite ``aiki.db``) when omitted.
        lease_ttl: how long a worker holds a run without heartbeats before it is recovered (given
            to another worker): the time a crashed worker's runs wait. A worker that stops in an
            orderly way hands its runs back at once. At least 0.2 s.
        heartbeat_interval: how often workers heartbeat; a third of ``lease_ttl`` by default, and
            at most half of it (a worker may beat more often, never less).
        max_recoveries: lease expiries a run survives before failing with ``recovery_exhausted``.
        max_payload_bytes: the largest request body accepted (413 beyond).
        stall_after: a run queued this long without being claimed (e.g. no worker serves its
            version) becomes ``stalled``; default ``$AIKI_STALL_AFTER`` seconds, else 24 hours.
        sleep_hold_max: a sleep this short, on a worker with a slot to spare, is waited out by its
            executor in memory (recorded as usual, resumed without a claim and a replay);
            ``timedelta(0)`` makes every sleep suspend the run and release the worker.
        iam: turn on identity and access (``aiki.iam.IamConfig``): users, organizations,
            namespaces, API keys and sessions, with every route authenticated and scoped to the
            caller's namespace. Without it the server has one implicit ``default`` namespace and no
            authentication (embedded use).
        redis_url: also carry wake-ups between server processes over Redis pub/sub
            (``redis://host:6379/0``; needs ``aiki[redis]``). The channel is named after the
            database, so deployments sharing one Redis stay apart.
        pg_listen: receive wake-ups from other processes over PostgreSQL LISTEN/NOTIFY (one
            extra connection per process). Turn it off where LISTEN is unavailable (e.g. behind a
            transaction-pooling proxy) and give ``redis_url`` instead; without either, other
            processes' changes are noticed by polling (about a second for timers).
        trusted_proxies: IPs or CIDR networks (a list, or one comma-separated string) of the reverse
            proxies in front of this server; ``aiki server`` reads ``AIKI_TRUSTED_PROXIES``. Only a
            request whose direct peer is one of them has its client address (rate limits, audit
            log) taken from ``X-Forwarded-For``, the rightmost hop that is not a trusted proxy.
            Default: none is trusted and the header is ignored.
        endpoints_allow_private: let push endpoints have URLs that resolve to loopback, private or
            link-local addresses (the SSRF guard refuses them otherwise, at registration and at
            every delivery). For development, tests, and private networks on purpose; default
            ``$AIKI_ENDPOINTS_ALLOW_PRIVATE`` (``1``/``true`` or ``0``/``false``), else off. Push
            endpoints also need a server secret key: IAM's, or ``$AIKI_SECRET_KEY`` without IAM.

    Example:
        >>> from aiki import database, server
        >>> aiki_server = server(db=database(url="sqlite+aiosqlite:///aiki.db"))
        >>> type(aiki_server.handler).__name__
        'Litestar'
    """
    ttl_ms, hb_ms = lease_settings_ms(lease_ttl, heartbeat_interval)
    settings = Settings(
        lease_ttl_ms=ttl_ms,
        heartbeat_interval_ms=hb_ms,
        max_recoveries=max_recoveries,
        max_payload_bytes=max_payload_bytes,
        stall_after_ms=_stall_after_ms(stall_after),
        sleep_hold_max_ms=_hold_ms(sleep_hold_max),
        endpoints_allow_private=_allow_private(endpoints_allow_private),
    )
    proxies = TrustedProxies.parse(trusted_proxies, name="trusted_proxies") if trusted_proxies else None
    return AikiServer(
        db or Database(DEFAULT_URL), settings, iam, pg_listen=pg_listen, redis_url=redis_url, trusted_proxies=proxies
    )


MIN_LEASE_TTL = timedelta(milliseconds=200)


def lease_settings_ms(
    lease_ttl: timedelta,
    heartbeat_interval: timedelta | None,
    *,
    ttl_name: str = "lease_ttl",
    heartbeat_name: str = "heartbeat_interval",
) -> tuple[int, int]:
    """The lease TTL and heartbeat interval in ms, checked; errors name the settings as given.

    A heartbeat must come well within the lease: at most half of it, so one late or lost beat does
    not lose the lease.
    """
    if lease_ttl < MIN_LEASE_TTL:
        raise ValueError(f"{ttl_name} must be at least {MIN_LEASE_TTL.total_seconds():g} s, got {_s(lease_ttl)}")
    ttl_ms = int(lease_ttl.total_seconds() * 1000)
    if heartbeat_interval is None:
        return ttl_ms, max(100, ttl_ms // 3)
    hb_ms = int(heartbeat_interval.total_seconds() * 1000)
    if hb_ms <= 0:
        raise ValueError(f"{heartbeat_name} must be positive, got {_s(heartbeat_interval)}")
    if hb_ms * 2 > ttl_ms:
        raise ValueError(
            f"{heartbeat_name} ({_s(heartbeat_interval)}) must be at most half of {ttl_name} ({_s(lease_ttl)}): "
            "a worker must beat several times within its lease"
        )
    return ttl_ms, hb_ms


def _s(value: timedelta) -> str:
    return f"{value.total_seconds():g} s"


def _stall_after_ms(stall_after: timedelta | None) -> int:
    if stall_after is None:
        raw = os.environ.get("AIKI_STALL_AFTER")
        if not raw:
            return Settings().stall_after_ms
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"AIKI_STALL_AFTER must be a number of seconds, got {raw!r}") from None
        stall_after = timedelta(seconds=seconds)
    if stall_after <= timedelta(0):
        raise ValueError("stall_after must be positive")
    return int(stall_after.total_seconds() * 1000)


ALLOW_PRIVATE_ENV = "AIKI_ENDPOINTS_ALLOW_PRIVATE"


def _allow_private(value: bool | None) -> bool:
    if value is not None:
        return value
    raw = os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ALLOW_PRIVATE_ENV} must be 1/true or 0/false, got {raw!r}")


def _env_secret_keys() -> list[str]:
    """``AIKI_SECRET_KEY`` (and ``AIKI_SECRET_KEY_PREVIOUS``) for a server without IAM: what push
    endpoints' signing secrets are sealed under."""
    from aiki.iam.server_secret import check_secret

    keys: list[str] = []
    for variable in ("AIKI_SECRET_KEY", "AIKI_SECRET_KEY_PREVIOUS"):
        value = os.environ.get(variable, "")
        if not value or (variable != "AIKI_SECRET_KEY" and not keys):
            continue
        problem = check_secret(variable, value)
        if problem is not None:
            raise ValueError(problem)
        keys.append(value)
    return keys


def _hold_ms(value: timedelta) -> int:
    # A held sleep parks its executor's resume request until the sleep's end; keep that short.
    if not timedelta(0) <= value <= MAX_SLEEP_HOLD:
        raise ValueError(f"sleep_hold_max must be between 0 and {MAX_SLEEP_HOLD.total_seconds():.0f} seconds")
    return int(value.total_seconds() * 1000)
