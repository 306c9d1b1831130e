"""OIDC settings: validated on construction, with an error naming the setting that is wrong."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiki.platform.domain.errors import OidcError

DEFAULT_SCOPES = ("openid", "email", "profile")

ENV_PREFIX = "AIKI_OIDC_"
ENV_NAMES = {
    "issuer": "AIKI_OIDC_ISSUER",
    "client_id": "AIKI_OIDC_CLIENT_ID",
    "client_secret": "AIKI_OIDC_CLIENT_SECRET",
    "redirect_uri": "AIKI_OIDC_REDIRECT_URI",
    "scopes": "AIKI_OIDC_SCOPES",
    "allowed_email_domains": "AIKI_OIDC_ALLOWED_EMAIL_DOMAINS",
}
_ATTRIBUTE_NAMES = {name: name for name in ENV_NAMES}


@dataclass(frozen=True)
class OidcConfig:
    """The settings of one OpenID provider.

    Attributes:
        issuer: The provider's issuer identifier, pinned: its discovery document and every ID
            token must name exactly this string. https, except on a loopback host.
        client_id: This server's client id at the provider (the ID token's audience).
        client_secret: Its client secret (a confidential client: the token call is back-channel).
        redirect_uri: The callback URL registered at the provider.
        scopes: Requested scopes; must include ``openid``.
        allowed_email_domains: If set, only identities with a verified email in one of these
            domains (exact match, case-insensitive) may sign in. None allows any.

    Raises:
        OidcError: ``oidc_config_invalid`` with ``field`` naming the missing or malformed setting.
    """

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    allowed_email_domains: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        scopes, domains = _validate(
            _ATTRIBUTE_NAMES,
            issuer=self.issuer,
            client_id=self.client_id,
            client_secret=self.client_secret,
            redirect_uri=self.redirect_uri,
            scopes=self.scopes,
            allowed_email_domains=self.allowed_email_domains,
        )
        # Normalized forms: a list given by a caller becomes a tuple, domains become lower case.
        object.__setattr__(self, "scopes", scopes)
        object.__setattr__(self, "allowed_email_domains", domains)

    def __repr__(self) -> str:
        # Keep the secret out of logs and tracebacks.
        return (
            f"OidcConfig(issuer={self.issuer!r}, client_id={self.client_id!r}, client_secret='***', "
            f"redirect_uri={self.redirect_uri!r}, scopes={self.scopes!r}, "
            f"allowed_email_domains={self.allowed_email_domains!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, default_redirect_uri: str | None = None) -> OidcConfig | None:
        """Read ``AIKI_OIDC_*`` variables; None when none is set (OIDC login is off).

        ``AIKI_OIDC_SCOPES`` is space-separated, ``AIKI_OIDC_ALLOWED_EMAIL_DOMAINS`` comma-separated.
        ``AIKI_OIDC_REDIRECT_URI`` falls back to ``default_redirect_uri`` (e.g. built from
        ``AIKI_BASE_URL`` and the callback route).

        Raises:
            OidcError: ``oidc_config_invalid`` whose ``field`` and message name the variable.
        """
        values = {name: environ.get(var, "").strip() for name, var in ENV_NAMES.items()}
        if not any(values.values()):
            return None
        redirect_uri = values["redirect_uri"] or default_redirect_uri or ""
        scopes = tuple(values["scopes"].split()) if values["scopes"] else DEFAULT_SCOPES
        domains = (
            tuple(d.strip() for d in values["allowed_email_domains"].split(","))
            if values["allowed_email_domains"]
            else None
        )
        fields = {
            "issuer": values["issuer"],
            "client_id": values["client_id"],
            "client_secret": values["client_secret"],
            "redirect_uri": redirect_uri,
            "scopes": scopes,
            "allowed_email_domains": domains,
        }
        _validate(ENV_NAMES, **fields)  # errors name the environment variable
        return cls(
            issuer=values["issuer"],
            client_id=values["client_id"],
            client_secret=values["client_secret"],
            redirect_uri=redirect_uri,
            scopes=scopes,
            allowed_email_domains=domains,
        )


def _validate(
    names: Mapping[str, str],
    *,
    issuer: object,
    client_id: object,
    client_secret: object,
    redirect_uri: object,
    scopes: object,
    allowed_email_domains: object,
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    _check_url(names["issuer"], issuer, what="the provider's issuer URL")
    for key, value in (("client_id", client_id), ("client_secret", client_secret)):
        if not isinstance(value, str) or not value.strip():
            raise _invalid(names[key], f"{names[key]} is not set: copy it from the provider's client registration")
    _check_url(names["redirect_uri"], redirect_uri, what="the callback URL registered at the provider")

    scope_list = _strings(names["scopes"], scopes)
    if "openid" not in scope_list or any(not s or " " in s for s in scope_list):
        raise _invalid(names["scopes"], f"{names['scopes']} must be scope names including 'openid', got {scope_list!r}")

    if allowed_email_domains is None:
        return scope_list, None
    domains = tuple(
        d.strip().lstrip("@").lower() for d in _strings(names["allowed_email_domains"], allowed_email_domains)
    )
    if not domains or any(not d or "@" in d or " " in d or "." not in d for d in domains):
        raise _invalid(
            names["allowed_email_domains"],
            f"{names['allowed_email_domains']} must be email domains like 'example.com' (unset it to allow any),"
            f" got {allowed_email_domains!r}",
        )
    return scope_list, domains


def _check_url(name: str, value: object, *, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(name, f"{name} is not set: give {what}")
    parts = urlsplit(value)
    secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))
    if not parts.hostname or not secure or parts.query or parts.fragment:
        raise _invalid(
            name,
            f"{name} must be an https URL without query or fragment (http only on a loopback host), got {value!r}",
        )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _invalid(name, f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise _invalid(name, f"{name} must be a list of strings, got {value!r}")
    return tuple(str(item) for item in items)


def _invalid(name: str, message: str) -> OidcError:
    return OidcError("oidc_config_invalid", message, field=name)
