"""What every IAM service needs: the database, the settings, the secrets and a clock."""

from __future__ import annotations

from collections.abc import Callable

from aiki.iam.config import IamConfig
from aiki.iam.crypto import Passwords, Secrets
from aiki.platform.db.engine import Database
from aiki.platform.domain.ids import now_ms


class Iam:
    """IAM state of one server process. ``clock`` is injectable so tests move time without sleeping."""

    def __init__(
        self,
        db: Database,
        config: IamConfig,
        *,
        clock: Callable[[], int] | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.secrets = Secrets(config.secret_key)
        self.passwords = passwords or Passwords()
        self.clock: Callable[[], int] = clock or now_ms

    def now(self) -> int:
        return self.clock()
