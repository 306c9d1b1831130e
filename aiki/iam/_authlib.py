"""A narrow, typed face of the authlib functions the OIDC relying party uses.

authlib ships no type information, so every call goes through here and its results are checked
or converted to the types the rest of ``aiki.iam`` relies on. Its JOSE module is deprecated in
favour of joserfc (same authors, typed, an authlib dependency), which ``oidc`` uses directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge


def s256_code_challenge(code_verifier: str) -> str:
    """The PKCE ``S256`` challenge of ``code_verifier`` (RFC 7636 section 4.2)."""
    return str(create_s256_code_challenge(code_verifier))


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    nonce: str,
    code_challenge: str,
) -> str:
    """The provider URL that starts an authorization code request with PKCE S256."""
    url = prepare_grant_uri(
        endpoint,
        client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=list(scopes),
        state=state,
        nonce=nonce,
        code_challenge=code_challenge,
        code_challenge_method="S256",
    )
    if not isinstance(url, str):  # pragma: no cover - authlib always builds a str
        raise TypeError("authlib returned a non-string authorization URL")
    return url


def authorization_code_body(*, code: str, redirect_uri: str, code_verifier: str, extra: dict[str, str]) -> str:
    """The form body of an authorization code token request (RFC 6749 section 4.1.3)."""
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=code_verifier, **extra
    )
    if not isinstance(body, str):  # pragma: no cover - authlib always builds a str
        raise TypeError("authlib returned a non-string token request body")
    return body
