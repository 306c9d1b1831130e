"""IAM settings: the server secret, the public URL, session lifetimes and rate limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiki.iam.mail import EMAIL_FROM_ENV, SMTP_URL_ENV, MailConfigError, SmtpSettings
from aiki.iam.oidc_config import OidcConfig
from aiki.iam.server_secret import PREVIOUS_SECRET_ENV, SECRET_ENV, check_secret

KEY_CACHE_TTL_ENV = "AIKI_API_KEY_CACHE_TTL_S"
EMAIL_VERIFICATION_ENV = "AIKI_EMAIL_VERIFICATION"
MAX_KEY_CACHE_TTL_S = 3600
# Where the API serves the OIDC callback (aiki.api.oidc_routes); the default redirect URI points here.
OIDC_CALLBACK_PATH = "/api/v1/auth/oidc/callback"


# Whole-number settings: field -> (environment variable, smallest value allowed).
INT_SETTINGS: dict[str, tuple[str, int]] = {
    "login_max_per_ip": ("AIKI_LOGIN_MAX_PER_IP", 1),
    "login_free_failures": ("AIKI_LOGIN_FREE_FAILURES", 1),
    "login_max_delay_s": ("AIKI_LOGIN_MAX_DELAY_S", 1),
    "throttle_window_s": ("AIKI_THROTTLE_WINDOW_S", 1),
    **{
        f"throttle_{action}_{scope}": (f"AIKI_THROTTLE_{action.upper()}_{scope.upper()}", 0)
        for action in ("signup", "login", "password_reset", "invitation_accept")
        for scope in ("per_ip", "global")
    },
    "password_hash_threads": ("AIKI_PASSWORD_HASH_THREADS", 1),
    "password_hash_queue": ("AIKI_PASSWORD_HASH_QUEUE", 0),
}


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
        login_window_s: the window of the per-address login failure cap and of the OIDC start limit.
        login_max_per_ip: failed password logins allowed per client address and window, across
            accounts (credential stuffing), and OIDC logins started per address and window
            (``AIKI_LOGIN_MAX_PER_IP``, default 100 per 15 minutes).
        login_free_failures: wrong passwords for one account from one address that cost nothing
            (``AIKI_LOGIN_FREE_FAILURES``, default 5). After them the next attempt from that
            address for that account waits 2, 4, 8... seconds (429 with ``Retry-After``); other
            addresses, the owner's usual one included, are not slowed. A successful login from the
            address, or a day without failures, forgets them (``aiki.iam.login_guard``).
        login_max_delay_s: the cap of that delay (``AIKI_LOGIN_MAX_DELAY_S``, default 900).
        throttle_window_s: the window of the per-action throttles below
            (``AIKI_THROTTLE_WINDOW_S``, default 60 seconds).
        throttle_<action>_per_ip / throttle_<action>_global: attempts of an anonymous-facing
            action allowed per client address / in all per window, counted in the shared
            ``rate_limits`` table so every replica sees them; past either, 429 with ``Retry-After``
            (``aiki.iam.throttle``). Actions and defaults (per address, in all):
            ``signup`` 5 / 100 (``AIKI_THROTTLE_SIGNUP_PER_IP``, ``AIKI_THROTTLE_SIGNUP_GLOBAL``),
            ``login`` 30 / 1,000 (``AIKI_THROTTLE_LOGIN_*``), ``password_reset`` 5 / 100
            (``AIKI_THROTTLE_PASSWORD_RESET_*``), ``invitation_accept`` 20 / 300
            (``AIKI_THROTTLE_INVITATION_ACCEPT_*``). 0 turns a limit off.
        password_hash_threads: threads computing argon2id hashes, which is also how many run at
            once (``AIKI_PASSWORD_HASH_THREADS``; default: one per CPU but one, at least one).
        password_hash_queue: hashes allowed to wait per thread before new sign-ups and logins are
            answered 429 with ``Retry-After`` (``AIKI_PASSWORD_HASH_QUEUE``, default 8).
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
        email_verification: ``AIKI_EMAIL_VERIFICATION`` (``on``, the default, or ``off``). On: a
            sign-up creates an unverified account and mails a link; until it is followed the account
            sees only "verify your email" (``aiki.iam.verification``), and invitations are accepted
            only by a verified address. Off: sign-up signs in at once, as on servers that cannot
            send mail; accounts stay unverified (so OIDC never links to them) and invitations need
            only a matching address. ``aiki server`` refuses to start with it on and no SMTP.
        smtp_url: ``AIKI_SMTP_URL``, the SMTP server that sends verification, password-reset and
            invitation mail (forms in ``aiki.iam.mail``; credentials never logged). None: no mail
            (``aiki dev`` writes messages to its log instead).
        email_from: ``AIKI_EMAIL_FROM``, the sender address of that mail (required with SMTP).
    """

    secret_key: str
    base_url: str
    session_idle_s: int = 30 * 60
    session_absolute_s: int = 12 * 3600
    invitation_ttl_s: int = 7 * 24 * 3600
    login_window_s: int = 15 * 60
    login_max_per_ip: int = 100
    login_free_failures: int = 5
    login_max_delay_s: int = 900
    throttle_window_s: int = 60
    throttle_signup_per_ip: int = 5
    throttle_signup_global: int = 100
    throttle_login_per_ip: int = 30
    throttle_login_global: int = 1_000
    throttle_password_reset_per_ip: int = 5
    throttle_password_reset_global: int = 100
    throttle_invitation_accept_per_ip: int = 20
    throttle_invitation_accept_global: int = 300
    password_hash_threads: int | None = None
    password_hash_queue: int = 8
    api_requests_per_minute: int | None = 30_000
    api_key_cache_ttl_s: float = 5.0
    secure_cookies: bool = True
    claim_default_organization: bool = False
    oidc: OidcConfig | None = None
    previous_secret_key: str | None = None
    email_verification: bool = True
    smtp_url: str | None = field(default=None, repr=False)  # may hold the SMTP password
    email_from: str | None = None

    def __post_init__(self) -> None:
        self._check_secrets()
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise IamConfigError(
                f"AIKI_BASE_URL must be an http(s) URL such as https://aiki.example.com, got {self.base_url!r}"
            )
        self._check_numbers()
        self._check_mail()

    def _check_secrets(self) -> None:
        for variable, value in ((SECRET_ENV, self.secret_key), (PREVIOUS_SECRET_ENV, self.previous_secret_key)):
            problem = None if value is None else check_secret(variable, value)
            if problem is not None:
                raise IamConfigError(problem)
        if self.previous_secret_key == self.secret_key:
            raise IamConfigError(
                f"{PREVIOUS_SECRET_ENV} is the same as {SECRET_ENV}: set {SECRET_ENV} to the new secret "
                f"and {PREVIOUS_SECRET_ENV} to the old one"
            )

    def _check_numbers(self) -> None:
        for name, (variable, minimum) in INT_SETTINGS.items():
            value = getattr(self, name)
            if value is None and name == "password_hash_threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise IamConfigError(f"{variable} must be a whole number of at least {minimum}, got {value!r}")
        ttl = self.api_key_cache_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= MAX_KEY_CACHE_TTL_S:
            raise IamConfigError(
                f"{KEY_CACHE_TTL_ENV} must be a number of seconds from 0 to {MAX_KEY_CACHE_TTL_S}, got {ttl!r}"
            )

    def _check_mail(self) -> None:
        if self.smtp_url is not None:
            try:
                SmtpSettings.parse(self.smtp_url)
            except MailConfigError as exc:
                raise IamConfigError(str(exc)) from None
            if not self.email_from:
                raise IamConfigError(f"{EMAIL_FROM_ENV} is not set: mail sent through {SMTP_URL_ENV} needs a sender")
        if self.email_from is not None and (
            "@" not in self.email_from or any(ch in self.email_from for ch in "\r\n\x00")
        ):
            raise IamConfigError(f"{EMAIL_FROM_ENV} must be an email address such as aiki@example.com")

    @property
    def smtp(self) -> SmtpSettings | None:
        """The parsed :attr:`smtp_url`, if mail is configured."""
        return SmtpSettings.parse(self.smtp_url) if self.smtp_url else None

    def require_mail(self) -> None:
        """Refuse a configuration that would create accounts nobody can verify (``aiki server``)."""
        if self.email_verification and self.smtp_url is None:
            raise IamConfigError(
                f"{SMTP_URL_ENV} is not set: sign-up mails a verification link. Set {SMTP_URL_ENV} and "
                f"{EMAIL_FROM_ENV}, or turn verification off with {EMAIL_VERIFICATION_ENV}=off"
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
        """Read ``AIKI_SECRET_KEY``, ``AIKI_BASE_URL`` (and, optional, ``AIKI_SECRET_KEY_PREVIOUS``,
        ``AIKI_API_KEY_CACHE_TTL_S``, ``AIKI_EMAIL_VERIFICATION``, ``AIKI_SMTP_URL``, ``AIKI_EMAIL_FROM``
        and the abuse limits of ``INT_SETTINGS``); raise naming the variable that is missing or
        malformed. ``overrides`` (CLI flags) win over the environment."""
        env = os.environ if environ is None else environ
        for name in ("AIKI_SECRET_KEY", "AIKI_BASE_URL"):
            if not env.get(name) and name.lower().removeprefix("aiki_") not in overrides:
                raise IamConfigError(f"{name} is not set: the standalone server runs with IAM and needs it")
        values: dict[str, object] = {
            "secret_key": env.get("AIKI_SECRET_KEY", ""),
            "base_url": env.get("AIKI_BASE_URL", ""),
            **_numbers_from_env(env),
            **_mail_from_env(env),
        }
        if env.get(PREVIOUS_SECRET_ENV):
            values["previous_secret_key"] = env[PREVIOUS_SECRET_ENV]
        values.update(overrides)
        if "oidc" not in overrides:
            base_url = str(values["base_url"]).rstrip("/")
            values["oidc"] = OidcConfig.from_env(env, default_redirect_uri=base_url + OIDC_CALLBACK_PATH)
        return cls(**values)  # type: ignore[arg-type]


def _numbers_from_env(env: Mapping[str, str]) -> dict[str, object]:
    """The key cache's time to live and the abuse limits of ``INT_SETTINGS`` that the environment sets."""
    values: dict[str, object] = {}
    ttl = env.get(KEY_CACHE_TTL_ENV, "").strip()
    if ttl:
        try:
            values["api_key_cache_ttl_s"] = float(ttl)
        except ValueError:
            raise IamConfigError(f"{KEY_CACHE_TTL_ENV} must be a number of seconds, got {ttl!r}") from None
    for name, (variable, _) in INT_SETTINGS.items():
        raw = env.get(variable, "").strip()
        if raw:
            try:
                values[name] = int(raw)
            except ValueError:
                raise IamConfigError(f"{variable} must be a whole number, got {raw!r}") from None
    return values


def _mail_from_env(env: Mapping[str, str]) -> dict[str, object]:
    """Email verification on or off, and the SMTP server and sender, as far as the environment sets them."""
    values: dict[str, object] = {}
    verification = env.get(EMAIL_VERIFICATION_ENV, "").strip().lower()
    if verification:
        if verification not in ("on", "off"):
            raise IamConfigError(f"{EMAIL_VERIFICATION_ENV} must be on or off, got {verification!r}")
        values["email_verification"] = verification == "on"
    if env.get(SMTP_URL_ENV, "").strip():
        values["smtp_url"] = env[SMTP_URL_ENV].strip()
    if env.get(EMAIL_FROM_ENV, "").strip():
        values["email_from"] = env[EMAIL_FROM_ENV].strip()
    return values
