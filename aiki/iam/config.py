"""IAM settings: the server secret, the public URL, session lifetimes and rate limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiki.iam.mail import EMAIL_FROM_ENV, SMTP_URL_ENV, MailConfigError, SmtpSettings
from aiki.iam.oidc_config import OidcConfig

MIN_SECRET_LENGTH = 32
KEY_CACHE_TTL_ENV = "AIKI_API_KEY_CACHE_TTL_S"
EMAIL_VERIFICATION_ENV = "AIKI_EMAIL_VERIFICATION"
MAX_KEY_CACHE_TTL_S = 3600
# Where the API serves the OIDC callback (aiki.api.iam_routes); the default redirect URI points here.
OIDC_CALLBACK_PATH = "/api/v1/auth/oidc/callback"


class IamConfigError(ValueError):
    """An IAM setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class IamConfig:
    """How identity and access work on this server.

    Attributes:
        secret_key: the server secret (``AIKI_SECRET_KEY``, at least 32 characters). API keys and
            invitation tokens are stored as HMACs under it, and session cookies are signed with it:
            changing it invalidates every key, session and pending invitation.
        base_url: the public URL of the server (``AIKI_BASE_URL``): invitation links point there
            and unsafe requests made with a session must come from its origin.
        session_idle_s: a session unused for this long is revoked.
        session_absolute_s: a session is revoked this long after login, used or not.
        invitation_ttl_s: default lifetime of an invitation link.
        login_window_s: the window of the login rate limits.
        login_max_per_account: login attempts allowed per account and window.
        login_max_per_ip: login attempts allowed per client address and window.
        api_requests_per_minute: requests allowed per API key and minute; ``None`` disables. Each
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
    login_max_per_account: int = 10
    login_max_per_ip: int = 100
    api_requests_per_minute: int | None = 30_000
    api_key_cache_ttl_s: float = 5.0
    secure_cookies: bool = True
    claim_default_organization: bool = False
    oidc: OidcConfig | None = None
    email_verification: bool = True
    smtp_url: str | None = field(default=None, repr=False)  # may hold the SMTP password
    email_from: str | None = None

    def __post_init__(self) -> None:
        if len(self.secret_key) < MIN_SECRET_LENGTH:
            raise IamConfigError(
                f"AIKI_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters "
                "(generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
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
    def origin(self) -> str:
        """``scheme://host[:port]`` of :attr:`base_url`, compared with the ``Origin`` header."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> IamConfig:
        """Read ``AIKI_SECRET_KEY``, ``AIKI_BASE_URL`` (and, optional, ``AIKI_API_KEY_CACHE_TTL_S``,
        ``AIKI_EMAIL_VERIFICATION``, ``AIKI_SMTP_URL``, ``AIKI_EMAIL_FROM``); raise naming the
        variable that is missing or malformed. ``overrides`` (CLI flags) win over the environment."""
        env = os.environ if environ is None else environ
        for name in ("AIKI_SECRET_KEY", "AIKI_BASE_URL"):
            if not env.get(name) and name.lower().removeprefix("aiki_") not in overrides:
                raise IamConfigError(f"{name} is not set: the standalone server runs with IAM and needs it")
        values: dict[str, object] = {
            "secret_key": env.get("AIKI_SECRET_KEY", ""),
            "base_url": env.get("AIKI_BASE_URL", ""),
        }
        ttl = env.get(KEY_CACHE_TTL_ENV, "").strip()
        if ttl:
            try:
                values["api_key_cache_ttl_s"] = float(ttl)
            except ValueError:
                raise IamConfigError(f"{KEY_CACHE_TTL_ENV} must be a number of seconds, got {ttl!r}") from None
        verification = env.get(EMAIL_VERIFICATION_ENV, "").strip().lower()
        if verification:
            if verification not in ("on", "off"):
                raise IamConfigError(f"{EMAIL_VERIFICATION_ENV} must be on or off, got {verification!r}")
            values["email_verification"] = verification == "on"
        if env.get(SMTP_URL_ENV, "").strip():
            values["smtp_url"] = env[SMTP_URL_ENV].strip()
        if env.get(EMAIL_FROM_ENV, "").strip():
            values["email_from"] = env[EMAIL_FROM_ENV].strip()
        values.update(overrides)
        if "oidc" not in overrides:
            base_url = str(values["base_url"]).rstrip("/")
            values["oidc"] = OidcConfig.from_env(env, default_redirect_uri=base_url + OIDC_CALLBACK_PATH)
        return cls(**values)  # type: ignore[arg-type]
