"""The SSRF guard of push endpoints: the server POSTs only to public addresses.

A URL is checked when an endpoint is registered and again before every delivery, since what a
name resolves to may change (DNS rebinding). Refused: schemes other than http(s), credentials in
the URL, and any host that resolves to a loopback, private, link-local (cloud metadata lives at
169.254.169.254), multicast, reserved or unspecified address, unless the server allows private
addresses (``AIKI_ENDPOINTS_ALLOW_PRIVATE=1``: ``aiki dev``, tests, a private network on purpose).
Redirects are never followed by the sender, so a checked URL cannot bounce elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiki.platform.domain.errors import EndpointUrlRefused

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves a host and port to the IP addresses a connection may use."""

# Addresses some clouds serve instance metadata on, beyond 169.254.0.0/16 (link-local).
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def address_refusal(address: str) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA or (ip.version == 4 and ip in ipaddress.ip_network("169.254.169.254/32")):
        return f"{ip} is a cloud metadata address"
    for kind, refused in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("shared (carrier-grade NAT)", ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10")),
    ):
        if refused:
            return f"{ip} is a {kind} address"
    return None


def check_syntax(url: str) -> tuple[str, int]:
    """The host and port of an acceptable endpoint URL.

    Raises:
        EndpointUrlRefused: not an absolute http(s) URL with a host, or it carries credentials.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise EndpointUrlRefused(url, f"it is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointUrlRefused(url, "only http and https URLs are allowed")
    if not parts.hostname:
        raise EndpointUrlRefused(url, "it has no host")
    if parts.username is not None or parts.password is not None:
        raise EndpointUrlRefused(url, "credentials in the URL are not allowed (the signature authenticates)")
    if parts.fragment:
        raise EndpointUrlRefused(url, "a fragment is not allowed")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolver) -> None:
    """Refuse ``url`` unless every address its host resolves to may be sent to.

    Raises:
        EndpointUrlRefused: the URL is malformed, its host does not resolve, or (unless
            ``allow_private``) one of its addresses is not public.
    """
    host, port = check_syntax(url)
    if allow_private:
        return
    try:
        addresses = [host] if _is_ip(host) else await resolve(host, port)
    except (OSError, ValueError) as e:  # ValueError: a name IDNA cannot encode (a label too long, empty)
        raise EndpointUrlRefused(url, f"its host {host!r} does not resolve ({e})") from None
    if not addresses:
        raise EndpointUrlRefused(url, f"its host {host!r} does not resolve")
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            hint = " (set AIKI_ENDPOINTS_ALLOW_PRIVATE=1 to allow private addresses)"
            where = reason if address == host else f"{host} resolves to {reason}"
            raise EndpointUrlRefused(url, f"{where}{hint}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
