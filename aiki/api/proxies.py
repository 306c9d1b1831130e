"""Which peers may say who the client is: ``AIKI_TRUSTED_PROXIES`` and ``X-Forwarded-For``.

The client address feeds the login rate limits and the audit log, so a header any client can
write must not set it. Only when the direct peer (the TCP connection's address) is a trusted proxy
is the client taken from ``X-Forwarded-For``: walking it from the right (the hop the proxy itself
appended) past every trusted proxy, the first untrusted address is the client. By default no peer
is trusted and the header is ignored (uvicorn's own handling, which trusted loopback, is off).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

TRUSTED_PROXIES_ENV = "AIKI_TRUSTED_PROXIES"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The networks whose peers may set the client address through ``X-Forwarded-For``."""

    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, spec: str | Iterable[str], *, name: str = TRUSTED_PROXIES_ENV) -> TrustedProxies:
        """From comma-separated IPs/CIDRs (``10.0.0.0/8, 192.0.2.7``); an error names ``name``."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        networks: list[_Network] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"{name} must be comma-separated IP addresses or CIDR networks (10.0.0.0/8), got {item!r}"
                ) from None
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a request from ``peer`` carrying ``forwarded_for``."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if _ip(hop) is None:
                break  # garbage in the chain: keep the nearest trusted address we have
            client = hop
            if not self.trusts(hop):
                break
        return client


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
