"""Who the client is behind proxies (``aiki.api.proxies``): only trusted peers may say."""

from __future__ import annotations

import pytest

from aiki.api.proxies import TrustedProxies


def test_by_default_no_peer_is_trusted_and_the_header_is_ignored() -> None:
    none = TrustedProxies.parse("")
    assert not none
    assert none.client("127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_a_trusted_peer_names_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.0.2.7 ,::1")
    assert proxies.client("10.1.1.1", "203.0.113.9") == "203.0.113.9"
    assert proxies.client("10.1.1.1", "198.51.100.1, 203.0.113.9, 10.2.2.2") == "203.0.113.9"
    assert proxies.client("::1", "2001:db8::5") == "2001:db8::5"
    # All hops trusted: the leftmost one is the best we know.
    assert proxies.client("192.0.2.7", "10.9.9.9, 10.8.8.8") == "10.9.9.9"
    # Garbage stops the walk at the nearest address we could read.
    assert proxies.client("10.1.1.1", "203.0.113.9, junk") == "10.1.1.1"
    assert proxies.client("10.1.1.1", "junk, 203.0.113.9") == "203.0.113.9"
    # An untrusted peer's header is ignored.
    assert proxies.client("198.51.100.20", "203.0.113.9") == "198.51.100.20"


@pytest.mark.parametrize("bad", ["localhost", "10.0.0.0/33", "1.2.3.4.5", "10.0.0.0/8;rm"])
def test_a_malformed_entry_is_refused_naming_the_setting(bad: str) -> None:
    with pytest.raises(ValueError, match=r"AIKI_TRUSTED_PROXIES must be comma-separated IP") as caught:
        TrustedProxies.parse(f"10.0.0.1,{bad}")
    assert repr(bad) in str(caught.value)
    with pytest.raises(ValueError, match="--trusted-proxies"):
        TrustedProxies.parse(bad, name="--trusted-proxies")
