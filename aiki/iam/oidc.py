"""OpenID Connect login: the relying-party side of the authorization code flow with PKCE.

No web framework and no database here: the IAM routes call this module and keep its
``PendingLogin`` values server-side. A login is two requests of one browser:

1. ``begin_login`` returns the provider URL to redirect to and a ``PendingLogin`` (fresh random
   ``state``, ``nonce`` and PKCE ``code_verifier``). The caller stores it **bound to the browser's
   pre-login session** (``PendingLoginStore``) and redirects.
2. On the callback, the caller **takes** the pending login of this session whose ``state`` the
   callback carries (removing it: a pending login is single-use) and hands it to
   ``complete_login`` with the callback's query parameters. That checks the state, the login's age
   and the provider's answer, exchanges the code (with the verifier) at the token endpoint, and
   verifies the ID token: signature against the provider's JWKS, ``iss``, ``aud``/``azp``, ``exp``,
   ``nonce``, then the allowed email domains. It returns a ``VerifiedIdentity``.

``start_login`` and ``finish_login`` do both steps against a ``PendingLoginStore``. Because the
store belongs to one session and ``take`` removes what it returns, a callback replayed later, or
in another browser session, finds nothing and is refused with ``oidc_state_mismatch``.

Every refusal is an ``OidcError`` whose ``code`` names the reason (see ``OIDC_ERROR_CODES``).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote

import httpx
import msgspec
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from aiki.iam import _authlib
from aiki.iam.oidc_config import OidcConfig
from aiki.iam.oidc_pending import InMemoryPendingLoginStore, PendingLogin, PendingLoginStore
from aiki.iam.oidc_tokens import VerifiedIdentity, check_email_domain, check_id_token_claims, decode_id_token
from aiki.platform.domain.errors import OidcError
from aiki.platform.domain.ids import now_ms as _now_ms

__all__ = [
    "InMemoryPendingLoginStore",
    "OidcConfig",
    "OidcError",
    "OidcRelyingParty",
    "PendingLogin",
    "PendingLoginStore",
    "ProviderMetadata",
    "TokenResponse",
    "VerifiedIdentity",
    "finish_login",
    "start_login",
]

PENDING_LOGIN_TTL_MS = 10 * 60 * 1000
"""How long a started login may wait for its callback (the user types a password, maybe MFA)."""
CLOCK_LEEWAY_S = 60
"""Clock skew tolerated between us and the provider on ``exp`` and ``iat``."""
METADATA_TTL_S = 3600.0
JWKS_REFETCH_MIN_INTERVAL_S = 10.0
"""An unknown ``kid`` refetches the JWKS (key rotation), but not more often than this."""
HTTP_TIMEOUT_S = 10.0
_MAX_ERROR_TEXT = 200


class ProviderMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of the provider's discovery document the relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    response_types_supported: list[str] = msgspec.field(default_factory=lambda: ["code"])
    id_token_signing_alg_values_supported: list[str] = msgspec.field(default_factory=lambda: ["RS256"])
    token_endpoint_auth_methods_supported: list[str] = msgspec.field(default_factory=lambda: ["client_secret_basic"])
    authorization_response_iss_parameter_supported: bool = False


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The token endpoint's answer (only the ID token is used for login)."""

    id_token: str | None = None
    access_token: str | None = None
    token_type: str | None = None


class OidcRelyingParty:
    """The relying party for one configured provider: discovery, login start, callback checks.

    Provider metadata and keys are fetched on first use and cached (the JWKS is refetched when a
    token names an unknown key). Safe to share between concurrent requests; build one per app.

    Args:
        config: The validated settings.
        http: The HTTP client for discovery, JWKS and token calls; one is made (and closed by
            ``aclose``) when omitted.
        pending_ttl_ms: How old a pending login may be when its callback arrives.
        leeway_s: Clock skew tolerated on the ID token's ``exp`` and ``iat``.
        jwks_refetch_interval_s: The least time between two JWKS fetches caused by an unknown ``kid``.
    """

    def __init__(
        self,
        config: OidcConfig,
        *,
        http: httpx.AsyncClient | None = None,
        pending_ttl_ms: int = PENDING_LOGIN_TTL_MS,
        leeway_s: int = CLOCK_LEEWAY_S,
        jwks_refetch_interval_s: float = JWKS_REFETCH_MIN_INTERVAL_S,
    ) -> None:
        self.config = config
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        self.pending_ttl_ms = pending_ttl_ms
        self.leeway_s = leeway_s
        self.jwks_refetch_interval_s = jwks_refetch_interval_s
        self._lock = asyncio.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> OidcRelyingParty:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- discovery ---------------------------------------------------------------------------

    async def provider_metadata(self) -> ProviderMetadata:
        """The provider's discovery document, fetched from ``{issuer}/.well-known/openid-configuration``.

        Raises:
            OidcError: ``oidc_discovery_failed`` if it cannot be fetched or read;
                ``oidc_wrong_issuer`` if its ``issuer`` is not exactly the configured one.
        """
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL_S:
                self._metadata = await self._fetch_metadata()
                self._metadata_at = time.monotonic()
            return self._metadata

    async def _fetch_metadata(self) -> ProviderMetadata:
        # OIDC Discovery 4: remove any terminating "/" from the issuer, then append the path.
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        body = await self._get_json(url, "discovery document")
        try:
            metadata = msgspec.json.decode(body, type=ProviderMetadata)
        except msgspec.DecodeError as exc:
            raise OidcError("oidc_discovery_failed", f"the discovery document at {url} is invalid: {exc}") from None
        if metadata.issuer != self.config.issuer:
            raise OidcError(
                "oidc_wrong_issuer",
                f"the provider's metadata names issuer {metadata.issuer!r}, but {self.config.issuer!r} is configured:"
                " they must match exactly",
            )
        if "code" not in metadata.response_types_supported:
            raise OidcError("oidc_discovery_failed", "the provider does not support the authorization code flow")
        return metadata

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        metadata = await self.provider_metadata()
        async with self._lock:
            if self._keys is None or refresh:
                body = await self._get_json(metadata.jwks_uri, "JWKS")
                try:
                    self._keys = KeySet.import_key_set(msgspec.json.decode(body))
                except (JoseError, ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
                    raise OidcError(
                        "oidc_discovery_failed", f"the provider's JWKS is invalid ({type(exc).__name__})"
                    ) from None
                self._keys_at = time.monotonic()
            return self._keys

    async def _get_json(self, url: str, what: str) -> bytes:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError("oidc_discovery_failed", f"could not fetch the provider's {what} at {url}: {exc}") from None
        if response.status_code != 200:
            raise OidcError(
                "oidc_discovery_failed", f"the provider's {what} at {url} answered HTTP {response.status_code}"
            )
        return response.content

    # -- login ---------------------------------------------------------------------------------

    async def begin_login(self, *, now_ms: int | None = None, return_to: str | None = None) -> tuple[str, PendingLogin]:
        """Start a login: the URL to redirect the browser to, and the login to keep server-side.

        Args:
            now_ms: The current time in ms (defaults to the clock).
            return_to: Opaque data kept with the pending login (e.g. where to go afterwards).

        Raises:
            OidcError: When the provider's metadata cannot be had (see ``provider_metadata``).
        """
        metadata = await self.provider_metadata()
        pending = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            # 64 random bytes -> 86 URL-safe characters, inside PKCE's 43..128.
            code_verifier=secrets.token_urlsafe(64),
            created_at=_now_ms() if now_ms is None else now_ms,
            issuer=self.config.issuer,
            client_id=self.config.client_id,
            redirect_uri=self.config.redirect_uri,
            return_to=return_to,
        )
        url = _authlib.authorization_url(
            metadata.authorization_endpoint,
            client_id=self.config.client_id,
            redirect_uri=self.config.redirect_uri,
            scopes=self.config.scopes,
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=_authlib.s256_code_challenge(pending.code_verifier),
        )
        return url, pending

    async def complete_login(
        self, pending: PendingLogin, params: Mapping[str, str], *, now_ms: int | None = None
    ) -> VerifiedIdentity:
        """Check a callback against its pending login and return who signed in.

        Args:
            pending: The login this browser session started (taken from its store: single-use).
            params: The callback's query parameters (``state``, ``code`` or ``error``, maybe ``iss``).
            now_ms: The current time in ms (defaults to the clock).

        Raises:
            OidcError: ``oidc_state_mismatch``, ``oidc_expired_login``, ``oidc_provider_error``,
                ``oidc_wrong_issuer``, ``oidc_token_exchange_failed``, ``oidc_invalid_token``,
                ``oidc_wrong_audience``, ``oidc_token_expired``, ``oidc_nonce_mismatch``,
                ``oidc_email_domain_not_allowed`` or ``oidc_email_unverified``.
        """
        now = _now_ms() if now_ms is None else now_ms
        config = self.config
        if (pending.issuer, pending.client_id, pending.redirect_uri) != (
            config.issuer,
            config.client_id,
            config.redirect_uri,
        ):
            raise OidcError(
                "oidc_state_mismatch", "the login was started under another OIDC configuration: start again"
            )
        state = params.get("state")
        if state is None and params.get("error") is not None:
            # Some providers drop the state from error redirects. An error callback can never sign
            # anyone in, so reporting it (rather than a state mismatch) helps the user and risks nothing.
            raise _provider_error(params)
        if not isinstance(state, str) or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcError("oidc_state_mismatch", "the callback's state does not match the login in progress")
        if now - pending.created_at > self.pending_ttl_ms:
            raise OidcError("oidc_expired_login", "the login took too long: start again")

        metadata = await self.provider_metadata()
        # RFC 9207: a provider that names itself in the callback must be the one we sent the user to.
        callback_iss = params.get("iss")
        if (
            callback_iss is not None or metadata.authorization_response_iss_parameter_supported
        ) and callback_iss != config.issuer:
            raise OidcError("oidc_wrong_issuer", f"the callback comes from issuer {callback_iss!r}")

        if params.get("error") is not None:
            raise _provider_error(params)
        code = params.get("code")
        if not code:
            raise OidcError("oidc_provider_error", "the callback carries neither a code nor an error")

        tokens = await self.exchange_code(pending, code)
        if not tokens.id_token:
            raise OidcError(
                "oidc_token_exchange_failed", "the token response has no id_token: is the openid scope granted?"
            )
        return await self.verify_id_token(tokens.id_token, nonce=pending.nonce, now_ms=now)

    async def exchange_code(self, pending: PendingLogin, code: str) -> TokenResponse:
        """Trade an authorization code (and the PKCE verifier) for tokens at the token endpoint.

        Raises:
            OidcError: ``oidc_token_exchange_failed`` when the endpoint refuses or cannot be reached.
        """
        metadata = await self.provider_metadata()
        config = self.config
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        extra: dict[str, str] = {}
        if "client_secret_basic" in metadata.token_endpoint_auth_methods_supported:
            # RFC 6749 2.3.1: both parts are form-encoded before the Basic encoding.
            pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            extra = {"client_id": config.client_id, "client_secret": config.client_secret}
        body = _authlib.authorization_code_body(
            code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier, extra=extra
        )
        try:
            response = await self._http.post(metadata.token_endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError("oidc_token_exchange_failed", f"could not reach the token endpoint: {exc}") from None
        if response.status_code != 200:
            raise OidcError(
                "oidc_token_exchange_failed",
                f"the token endpoint answered HTTP {response.status_code}: {_oauth_error(response.content)}",
            )
        try:
            return msgspec.json.decode(response.content, type=TokenResponse)
        except msgspec.DecodeError:
            raise OidcError(
                "oidc_token_exchange_failed", "the token endpoint's answer is not a token response"
            ) from None

    async def verify_id_token(self, id_token: str, *, nonce: str, now_ms: int | None = None) -> VerifiedIdentity:
        """Verify an ID token's signature and claims for a login with this ``nonce``.

        Raises:
            OidcError: ``oidc_invalid_token``, ``oidc_wrong_issuer``, ``oidc_wrong_audience``,
                ``oidc_token_expired``, ``oidc_nonce_mismatch``, ``oidc_email_domain_not_allowed``
                or ``oidc_email_unverified``.
        """
        now = _now_ms() if now_ms is None else now_ms
        metadata = await self.provider_metadata()
        algorithms = metadata.id_token_signing_alg_values_supported
        keys = await self._key_set()
        try:
            claims = decode_id_token(id_token, keys, algorithms)
        except InvalidKeyIdError:
            if time.monotonic() - self._keys_at < self.jwks_refetch_interval_s:
                raise OidcError(
                    "oidc_invalid_token", "the ID token is signed with a key the provider does not publish"
                ) from None
            keys = await self._key_set(refresh=True)
            try:
                claims = decode_id_token(id_token, keys, algorithms)
            except InvalidKeyIdError:
                raise OidcError(
                    "oidc_invalid_token", "the ID token is signed with a key the provider does not publish"
                ) from None
        identity = check_id_token_claims(
            claims,
            issuer=self.config.issuer,
            client_id=self.config.client_id,
            nonce=nonce,
            now_s=now / 1000,
            leeway_s=self.leeway_s,
        )
        check_email_domain(identity, self.config.allowed_email_domains)
        return identity


# -- pending logins bound to a browser session (kept in an ``oidc_pending.PendingLoginStore``) -----


async def start_login(
    rp: OidcRelyingParty, store: PendingLoginStore, *, return_to: str | None = None, now_ms: int | None = None
) -> str:
    """Begin a login, keep it in this session's ``store`` and return the URL to redirect to."""
    url, pending = await rp.begin_login(now_ms=now_ms, return_to=return_to)
    await store.put(pending)
    return url


async def finish_login(
    rp: OidcRelyingParty, store: PendingLoginStore, params: Mapping[str, str], *, now_ms: int | None = None
) -> tuple[VerifiedIdentity, PendingLogin]:
    """Complete the login a callback answers, consuming its pending login from this session's store.

    The pending login is removed before any check runs, so a failed or replayed callback cannot be
    tried again; the user starts a new login instead.

    Returns:
        The verified identity, and the pending login (for its ``return_to``).

    Raises:
        OidcError: ``oidc_state_mismatch`` when this session has no login with the callback's state
            (forged, already used, or started in another browser session), else as ``complete_login``.
    """
    state = params.get("state")
    if state is None and params.get("error") is not None:
        raise _provider_error(params)  # nothing to consume: the provider sent no state back
    pending = await store.take(state) if isinstance(state, str) and state else None
    if pending is None:
        raise OidcError(
            "oidc_state_mismatch",
            "no login with this state is in progress in this browser session (already used, or started elsewhere)",
        )
    identity = await rp.complete_login(pending, params, now_ms=now_ms)
    return identity, pending


def _provider_error(params: Mapping[str, str]) -> OidcError:
    error = params.get("error") or ""
    description = params.get("error_description") or ""
    return OidcError(
        "oidc_provider_error", f"the provider refused the login: {_clip(error)} {_clip(description)}".strip()
    )


def _clip(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable[:_MAX_ERROR_TEXT]


def _oauth_error(body: bytes) -> str:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "no error details"
    if not isinstance(data, dict):
        return "no error details"
    error = data.get("error")
    description = data.get("error_description")
    parts = [_clip(str(x)) for x in (error, description) if x]
    return " ".join(parts) or "no error details"
