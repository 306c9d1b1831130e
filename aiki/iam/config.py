"""IAM settings: the server secret, the public URL, session lifetimes and rate limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiki.iam.oidc_config import OidcConfig
from aiki.iam.server_secret import PREVIOUS_SECRET_ENV, SECRET_ENV, check_secret

KEY_CACHE_TTL_ENV = "AIKI_API_KEY_CACHE_TTL_S"
MAX_KEY_CACHE_TTL_S = 3600
# Where the API serves the OIDC callback (aiki.api.iam_routes); the default redirect URI points here.
OIDC_CALLBACK_PATH = "/api/v1/auth/oidc/callback"


class IamConfigError(ValueError):
    """An IAM setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class IamConfig:
    """How identity and access work on this server.

    Attributes:
        secret_key: the server secret (``AIKI_SECRET_KEY``, at least 32 characters of which at least
            16 distinct). API keys and invitation tokens are stored as HMACs under it, and session
            cookies are signed with it: changing it alone invalidates every key, session and pending
            invitation; rotate it with ``previous_secret_key``.
        previous_secret_key: the secret ``secret_key`` replaced (``AIKI_SECRET_KEY_PREVIOUS``,
            optional, same rules). While set, keys, sessions, invitations and OIDC logins made under
            it still verify; everything new uses ``secret_key``, and an API key used once is stored
            again under ``secret_key``. Drop it once the rotation is over (README, "Rotating the
            server secret").
        base_url: the public URL of the server (``AIKI_BASE_URL``): invitation links point there
            and unsafe requests made with a session must come from its origin.
        session_idle_s: a session unused for this long is revoked.
        session_absolute_s: a session is revoked this long after login, used or not.
        invitation_ttl_s: default lifetime of an invitation link.
        login_window_s: the window of the login rate limits.
        login_max_per_account: login attempts allowed per account and window.
        login_max_per_ip: login attempts allowed per client address and window.
        api_requests_per_minute: requests allowed per API key and minute (``aiki server`` reads
            ``AIKI_API_RATE_LIMIT`` / ``--api-rate-limit``: a number, ``0`` or ``off``); ``None`` disables. Each
            process counts in memory and folds its counts into the shared counter about once a
            second, so with several replicas a key may overshoot a little (``aiki.iam.rate_limit``).
        api_key_cache_ttl_s: how long a process trusts a key row it read (``AIKI_API_KEY_CACHE_TTL_S``,
            0 to 3600; 0 reads the row on every request). Every request still checks the key's
            secret and expiry. Revoking a key or deleting its namespace takes effect at once on the
            process that did it; other replicas may accept the key for up to this long.
        secure_cookies: mark the session cookie ``Secure`` (keep on outside tests on plain HTTP).
        claim_default_organization: the first sign-up becomes owner of the implicit ``default``
            organization instead of creating one (``aiki dev``: the example worker serves it).
        oidc: sign-in through an OpenID provider (``GET /api/v1/auth/oidc/login``); ``from_env``
            reads it from the ``AIKI_OIDC_*`` variables. None: password login only.
    """

    secret_key: str
    base_url: str
    session_idle_s: int = 30 * 60
    session_absolute_s: int = 12 * 3600
    invitation_ttl_s: int = 7 * 24 * 3600
    login_window_s: int = 15 * 60
    login_max_per_account: int = 10
    login_max_per_ip: int = 100
    api_requests_per_minute: int | None = 30_000
    api_key_cache_ttl_s: float = 5.0
    secure_cookies: bool = True
    claim_default_organization: bool = False
    oidc: OidcConfig | None = None
    previous_secret_key: str | None = None

    def __post_init__(self) -> None:
        for variable, value in ((SECRET_ENV, self.secret_key), (PREVIOUS_SECRET_ENV, self.previous_secret_key)):
            problem = None if value is None else check_secret(variable, value)
            if problem is not None:
                raise IamConfigError(problem)
        if self.previous_secret_key == self.secret_key:
            raise IamConfigError(
                f"{PREVIOUS_SECRET_ENV} is the same as {SECRET_ENV}: set {SECRET_ENV} to the new secret "
                f"and {PREVIOUS_SECRET_ENV} to the old one"
            )
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise IamConfigError(
                f"AIKI_BASE_URL must be an http(s) URL such as https://aiki.example.com, got {self.base_url!r}"
            )
        ttl = self.api_key_cache_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= MAX_KEY_CACHE_TTL_S:
            raise IamConfigError(
                f"{KEY_CACHE_TTL_ENV} must be a number of seconds from 0 to {MAX_KEY_CACHE_TTL_S}, got {ttl!r}"
            )

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The server secrets that verify: the current one, then the previous one while rotating."""
        return (self.secret_key,) if self.previous_secret_key is None else (self.secret_key, self.previous_secret_key)

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of :attr:`base_url`, compared with the ``Origin`` header."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> IamConfig:
        """Read ``AIKI_SECRET_KEY``, ``AIKI_BASE_URL`` (and ``AIKI_SECRET_KEY_PREVIOUS``,
        ``AIKI_API_KEY_CACHE_TTL_S``, optional); raise naming the variable that is missing or malformed."""
        env = os.environ if environ is None else environ
        for name in ("AIKI_SECRET_KEY", "AIKI_BASE_URL"):
            if not env.get(name) and name.lower().removeprefix("aiki_") not in overrides:
                raise IamConfigError(f"{name} is not set: the standalone server runs with IAM and needs it")
        values: dict[str, object] = {
            "secret_key": env.get("AIKI_SECRET_KEY", ""),
            "base_url": env.get("AIKI_BASE_URL", ""),
        }
        if env.get(PREVIOUS_SECRET_ENV):
            values["previous_secret_key"] = env[PREVIOUS_SECRET_ENV]
        ttl = env.get(KEY_CACHE_TTL_ENV, "").strip()
        if ttl:
            try:
                values["api_key_cache_ttl_s"] = float(ttl)
            except ValueError:
                raise IamConfigError(f"{KEY_CACHE_TTL_ENV} must be a number of seconds, got {ttl!r}") from None
        values.update(overrides)
        if "oidc" not in overrides:
            base_url = str(values["base_url"]).rstrip("/")
            values["oidc"] = OidcConfig.from_env(env, default_redirect_uri=base_url + OIDC_CALLBACK_PATH)
        return cls(**values)  # type: ignore[arg-type]
