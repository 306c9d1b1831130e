"""ID token checks of the OIDC relying party: signature, then each claim with its own error code.

Pure functions over a key set and a clock reading; ``aiki.iam.oidc`` fetches the keys and calls
these. Claims are checked here one by one (rather than by a library's claims registry) so every
refusal carries the specific ``OidcError.code`` a caller, a log or a test can rely on.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from aiki.platform.domain.errors import OidcError

# Only asymmetric algorithms: an HMAC-signed ID token would be keyed by the client secret, and
# "none" is never acceptable for a token that came through the back channel of a confidential client.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
MAX_SUBJECT_LENGTH = 255  # OIDC Core 2: sub "MUST NOT exceed 255 ASCII characters"


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """Who the provider says signed in, after every check passed.

    Users are keyed by ``(issuer, subject)``: never by email, which providers let people change.

    Attributes:
        issuer: The pinned issuer that signed the ID token.
        subject: The provider's stable id for the user (``sub``).
        email: The email the provider asserted, if the ``email`` scope was granted.
        email_verified: Whether the provider asserted it verified that email.
        name: The display name (``name``), if given.
    """

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None

    @property
    def may_link_by_email(self) -> bool:
        """Whether this identity may be attached to an existing (password) user with the same email.

        Only a provider-verified email may link: otherwise anyone who can type someone else's
        address at a provider would take over that person's account here.
        """
        return self.email_verified and bool(self.email)

    @property
    def email_domain(self) -> str | None:
        """The lower-cased domain of ``email`` (after its last ``@``), or None without an email."""
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].lower()


def decode_id_token(id_token: str, keys: KeySet, algorithms: Collection[str]) -> Mapping[str, object]:
    """Verify the ID token's signature with the provider's keys and return its claims.

    Raises:
        InvalidKeyIdError: No key in ``keys`` has the token's ``kid`` (the caller may refetch the
            provider's JWKS once, for a rotated key, and try again).
        OidcError: ``oidc_invalid_token`` for a malformed token, a refused algorithm or a bad signature.
    """
    allowed = sorted(set(algorithms) & ASYMMETRIC_ALGORITHMS)
    if not allowed:
        raise OidcError("oidc_invalid_token", "the provider offers no asymmetric ID token signing algorithm")
    try:
        token = jwt.decode(id_token, keys, algorithms=allowed)
    except InvalidKeyIdError:
        raise
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        # ValueError/KeyError/TypeError: joserfc's reading of a malformed compact token or header.
        reason = type(exc).__name__
        raise OidcError("oidc_invalid_token", f"the ID token's signature does not verify ({reason})") from None
    return token.claims


def check_id_token_claims(
    claims: Mapping[str, object],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now_s: float,
    leeway_s: int,
) -> VerifiedIdentity:
    """Check the claims OIDC Core 3.1.3.7 asks a relying party to check; return the identity.

    Args:
        claims: The verified ID token's payload.
        issuer: The pinned issuer: ``iss`` must equal it exactly.
        client_id: Our client id: it must be in ``aud``; with several audiences ``azp`` must name it.
        nonce: The pending login's nonce: ``nonce`` must equal it.
        now_s: The current time, in seconds since the epoch.
        leeway_s: Allowed clock skew for ``exp`` and ``iat``.

    Raises:
        OidcError: With the code of the first check that fails.
    """
    iss = claims.get("iss")
    if iss != issuer:
        raise OidcError("oidc_wrong_issuer", f"the ID token was issued by {iss!r}, not the configured {issuer!r}")

    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is None or client_id not in audiences:
        raise OidcError("oidc_wrong_audience", f"the ID token is meant for {aud!r}, not client {client_id!r}")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise OidcError(
            "oidc_wrong_audience", f"the ID token was issued to authorized party {azp!r}, not client {client_id!r}"
        )

    exp = _number(claims, "exp")
    if now_s > exp + leeway_s:
        raise OidcError("oidc_token_expired", "the ID token has expired")
    iat = _number(claims, "iat")
    if iat > now_s + leeway_s:
        raise OidcError("oidc_invalid_token", "the ID token claims to be issued in the future: check the clocks")

    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise OidcError("oidc_nonce_mismatch", "the ID token does not answer this login's authorization request")

    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise OidcError("oidc_invalid_token", "the ID token has no usable subject (sub)")

    email = claims.get("email")
    name = claims.get("name")
    return VerifiedIdentity(
        issuer=issuer,
        subject=subject,
        email=email.strip() if isinstance(email, str) and email.strip() else None,
        email_verified=_is_true(claims.get("email_verified")),
        name=name if isinstance(name, str) and name else None,
    )


def check_email_domain(identity: VerifiedIdentity, allowed_domains: Collection[str] | None) -> None:
    """Refuse an identity whose email is outside ``allowed_domains`` (None allows everyone).

    The rule needs a verified email: an unverified address says nothing about who owns it.
    """
    if allowed_domains is None:
        return
    domain = identity.email_domain
    if domain is None:
        raise OidcError(
            "oidc_email_domain_not_allowed", "sign-in is limited to some email domains and the provider gave no email"
        )
    if domain not in allowed_domains:
        raise OidcError("oidc_email_domain_not_allowed", f"email domain {domain!r} may not sign in here")
    if not identity.email_verified:
        raise OidcError("oidc_email_unverified", "the provider has not verified this email address")


def _number(claims: Mapping[str, object], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OidcError("oidc_invalid_token", f"the ID token has no numeric {name!r} claim")
    return float(value)


def _is_true(value: object) -> bool:
    # Some providers (e.g. AWS Cognito) send the boolean as the string "true".
    return value is True or value == "true"
