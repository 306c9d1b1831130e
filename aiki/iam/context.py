"""What every IAM service needs: the database, the settings, the secrets and a clock."""

from __future__ import annotations

from collections.abc import Callable

from aiki.iam.config import IamConfig
from aiki.iam.crypto import Passwords, Secrets
from aiki.iam.key_cache import KeyCache
from aiki.iam.mail import Mailer, NoMailer, SmtpMailer
from aiki.iam.oidc import OidcRelyingParty
from aiki.iam.rate_limit import ApiRateLimiter
from aiki.platform.db.engine import Database
from aiki.platform.domain.ids import now_ms


class Iam:
    """IAM state of one server process. ``clock`` is injectable so tests move time without sleeping.

    ``key_cache`` and ``api_limits`` keep API-key authentication off the database in the steady
    state (``aiki.iam.key_cache``, ``aiki.iam.rate_limit``). ``mailer`` sends verification,
    password-reset and invitation mail: SMTP when configured, else nothing (``aiki dev`` swaps in
    a ``LogMailer``, tests a ``MemoryOutbox``; ``aiki.iam.mail``).
    """

    def __init__(
        self,
        db: Database,
        config: IamConfig,
        *,
        clock: Callable[[], int] | None = None,
        passwords: Passwords | None = None,
        mailer: Mailer | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.secrets = Secrets(config.secret_key, config.previous_secret_key)
        self.passwords = passwords or Passwords(
            threads=config.password_hash_threads, queue_per_thread=config.password_hash_queue
        )
        self.clock: Callable[[], int] = clock or now_ms
        self._oidc: OidcRelyingParty | None = None
        self.key_cache = KeyCache(round(config.api_key_cache_ttl_s * 1000))
        self.api_limits = ApiRateLimiter()
        self.mailer: Mailer = mailer or _default_mailer(config)

    @property
    def oidc(self) -> OidcRelyingParty | None:
        """The OpenID relying party (made on first use: it caches the provider's metadata), if configured."""
        if self._oidc is None and self.config.oidc is not None:
            self._oidc = OidcRelyingParty(self.config.oidc)
        return self._oidc

    async def aclose(self) -> None:
        """Release the relying party's HTTP client and the password hashing threads."""
        if self._oidc is not None:
            await self._oidc.aclose()
            self._oidc = None
        self.passwords.close()

    def now(self) -> int:
        return self.clock()


def _default_mailer(config: IamConfig) -> Mailer:
    smtp = config.smtp
    if smtp is not None and config.email_from:
        return SmtpMailer(smtp, config.email_from)
    return NoMailer()  # ``aiki dev`` puts a LogMailer here; a server without SMTP logs no links
