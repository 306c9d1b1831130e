"""OpenID Connect logins in progress: what a started login keeps server-side, and where.

A ``PendingLogin`` is bound to the browser session that started it and used once (``aiki.iam.oidc``).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from aiki.platform.domain.errors import OidcError


class PendingLogin(msgspec.Struct, frozen=True, kw_only=True):
    """A login that has been sent to the provider and awaits its callback.

    Store it server-side, bound to the browser's pre-login session, and use it once: ``take`` it
    (read and delete atomically) when the callback arrives, whatever the outcome. Never put it in a
    cookie or URL: the ``code_verifier`` and ``nonce`` must stay out of the browser.

    Attributes:
        state: Random value the provider echoes back: binds the callback to this login.
        nonce: Random value the ID token must carry: binds the token to this login.
        code_verifier: PKCE secret; its S256 challenge went to the provider.
        created_at: When the login started, in milliseconds since the epoch.
        issuer: The issuer the login was started with (a config change voids it).
        client_id: The client id the login was started with.
        redirect_uri: The redirect URI sent to the provider (the token request repeats it).
        return_to: Opaque caller data, e.g. the page to show after login. The caller must check it
            is a local path before redirecting to it.
    """

    state: str
    nonce: str
    code_verifier: str
    created_at: int
    issuer: str
    client_id: str
    redirect_uri: str
    return_to: str | None = None

    def to_json(self) -> str:
        """The JSON text to keep in a database column."""
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, data: str | bytes) -> PendingLogin:
        """Read back what ``to_json`` wrote.

        Raises:
            OidcError: ``oidc_state_mismatch`` when the stored text is not a pending login.
        """
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError:
            raise OidcError("oidc_state_mismatch", "the stored login in progress is unreadable: start again") from None


class PendingLoginStore(Protocol):
    """Where ONE browser session keeps its logins in progress (build one per request's session).

    An IAM implementation keeps ``PendingLogin.to_json()`` in a row keyed by (pre-login session id,
    state) and implements ``take`` as one ``DELETE ... RETURNING`` (or select + delete in one
    transaction), so a callback can be used once and only in the session that started it.
    """

    async def put(self, pending: PendingLogin) -> None:
        """Keep ``pending`` for this session."""
        ...

    async def take(self, state: str) -> PendingLogin | None:
        """Remove and return this session's pending login with ``state``; None when there is none."""
        ...


class InMemoryPendingLoginStore:
    """A ``PendingLoginStore`` in a dict: for tests and single-process tools, not for servers
    (it neither survives a restart nor spans replicas)."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingLogin] = {}

    async def put(self, pending: PendingLogin) -> None:
        self._pending[pending.state] = pending

    async def take(self, state: str) -> PendingLogin | None:
        return self._pending.pop(state, None)

    def __len__(self) -> int:
        return len(self._pending)
