"""The SSRF guard of push endpoints (``aiki.platform.services.url_guard``): what a URL may be, and
which addresses a delivery may go to. Host names resolve through fake resolvers (no DNS), except
for numeric spellings and ``localhost``, which the system resolves without the network."""

from __future__ import annotations

import pytest

from aiki.platform.domain.errors import EndpointUrlRefused
from aiki.platform.services.url_guard import address_refusal, check_syntax, check_url, system_resolver


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return list(addresses)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def refused(url: str, *addresses: str, allow_private: bool = False) -> str:
    with pytest.raises(EndpointUrlRefused) as caught:
        await check_url(url, allow_private=allow_private, resolve=resolver(*addresses))
    assert caught.value.field == "url"
    assert caught.value.code == "validation_error"
    return caught.value.reason


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("100.100.100.200", "cloud metadata"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "private"),  # also unspecified: the first kind that applies is named
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),  # also reserved
        ("::1", "loopback"),
        ("::", "private"),  # also unspecified
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    reason = address_refusal(address)
    assert reason is not None
    assert kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://hooks.example.com/", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("hooks.example.com/x", "only http and https"),
        ("http:///x", "no host"),
        ("https://user:secret@hooks.example.com/x", "credentials"),
        ("https://user@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
        ("http://[::1/x", "not a valid URL"),
    ],
)
async def test_malformed_urls_are_refused_even_when_private_addresses_are_allowed(url: str, reason: str) -> None:
    assert reason in await refused(url, "93.184.216.34")
    assert reason in await refused(url, "93.184.216.34", allow_private=True)


def test_the_port_defaults_by_scheme() -> None:
    assert check_syntax("https://Hooks.Example.com/x") == ("hooks.example.com", 443)
    assert check_syntax("http://hooks.example.com/x") == ("hooks.example.com", 80)
    assert check_syntax("http://[2606:4700::1]:8443/x") == ("2606:4700::1", 8443)


async def test_a_public_host_passes_and_is_resolved_with_its_port() -> None:
    resolve = resolver("93.184.216.34", "2606:4700::1")
    await check_url("https://hooks.example.com:8443/x", allow_private=False, resolve=resolve)
    assert resolve.calls == [("hooks.example.com", 8443)]  # type: ignore[attr-defined]


async def test_ip_literals_are_checked_without_resolving() -> None:
    resolve = resolver("93.184.216.34")
    for url in ("http://127.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/"):
        with pytest.raises(EndpointUrlRefused):
            await check_url(url, allow_private=False, resolve=resolve)
    await check_url("http://93.184.216.34/", allow_private=False, resolve=resolve)
    await check_url("http://[2606:4700::1]/", allow_private=False, resolve=resolve)
    assert resolve.calls == []  # type: ignore[attr-defined]


async def test_a_host_is_refused_when_any_of_its_addresses_is_not_public() -> None:
    reason = await refused("https://internal.example.com/", "93.184.216.34", "10.9.8.7")
    assert "internal.example.com resolves to 10.9.8.7 is a private address" in reason
    assert "AIKI_ENDPOINTS_ALLOW_PRIVATE" in reason
    assert "metadata" in await refused("https://meta.example.com/", "fd00:ec2::254")


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    assert "does not resolve" in await refused("https://empty.example.com/")

    async def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(EndpointUrlRefused, match="does not resolve"):
        await check_url("https://nowhere.invalid/", allow_private=False, resolve=failing)


@pytest.mark.parametrize("host", ["a" * 70 + ".example.com", "a..b.example.com"])
async def test_a_name_idna_cannot_encode_is_refused_not_an_error(host: str) -> None:
    with pytest.raises(EndpointUrlRefused, match="does not resolve"):
        await check_url(f"https://{host}/", allow_private=False, resolve=system_resolver)


async def test_allow_private_skips_the_address_checks() -> None:
    resolve = resolver("10.0.0.1")
    for url in ("http://127.0.0.1:9000/", "http://169.254.169.254/", "https://internal.example.com/"):
        await check_url(url, allow_private=True, resolve=resolve)
    assert resolve.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["http://2130706433/", "http://127.1/", "http://0x7f000001/", "http://localhost:8000/"])
async def test_other_spellings_of_loopback_are_refused_through_the_system_resolver(url: str) -> None:
    with pytest.raises(EndpointUrlRefused, match="loopback"):
        await check_url(url, allow_private=False, resolve=system_resolver)
