"""Signing secrets at rest (``aiki.platform.secret_box``): sealed under the server secret, bound to
their endpoint, and still opened under the previous server secret while it is rotated."""

from __future__ import annotations

import pytest

from aiki.platform.secret_box import SecretBox, SecretBoxError

KEY = "server-secret-one-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER = "server-secret-two-0123456789-abcdefghijklmnopqrstuvwxyz"
PLAIN = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_sealed_value_opens_under_the_same_secret_and_context() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(PLAIN, context="ep-1")
    assert sealed.startswith("v1:")
    assert PLAIN not in sealed
    assert PLAIN.removeprefix("whsec_") not in sealed
    assert box.open(sealed, context="ep-1") == PLAIN
    assert SecretBox(KEY).open(sealed, context="ep-1") == PLAIN, "another process with the same secret"


def test_sealing_twice_gives_different_values() -> None:
    box = SecretBox(KEY)
    assert box.seal(PLAIN, context="ep-1") != box.seal(PLAIN, context="ep-1")


def test_another_context_does_not_open_it() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(PLAIN, context="ep-1")
    with pytest.raises(SecretBoxError):
        box.open(sealed, context="ep-2")


def test_another_server_secret_does_not_open_it() -> None:
    sealed = SecretBox(KEY).seal(PLAIN, context="ep-1")
    with pytest.raises(SecretBoxError):
        SecretBox(OTHER).open(sealed, context="ep-1")


@pytest.mark.parametrize("change", ["flip", "truncate", "prefix", "garbage"])
def test_an_altered_value_does_not_open(change: str) -> None:
    box = SecretBox(KEY)
    sealed = box.seal(PLAIN, context="ep-1")
    body = sealed[3:]
    altered = {
        "flip": "v1:" + body[:-6] + ("A" if body[-6] != "A" else "B") + body[-5:],
        "truncate": sealed[:-8],
        "prefix": body,
        "garbage": "v1:AAAA",
    }[change]
    with pytest.raises((SecretBoxError, ValueError)):
        box.open(altered, context="ep-1")


def test_the_previous_server_secret_still_opens_during_a_rotation() -> None:
    old_box = SecretBox(KEY)
    sealed_before = old_box.seal(PLAIN, context="ep-1")
    rotating = SecretBox(OTHER, previous_key=KEY)
    assert rotating.open(sealed_before, context="ep-1") == PLAIN
    # What is sealed now is sealed under the new secret only.
    sealed_now = rotating.seal(PLAIN, context="ep-1")
    assert SecretBox(OTHER).open(sealed_now, context="ep-1") == PLAIN
    with pytest.raises(SecretBoxError):
        old_box.open(sealed_now, context="ep-1")
    # Once the previous secret is dropped, what was sealed under it no longer opens.
    with pytest.raises(SecretBoxError):
        SecretBox(OTHER).open(sealed_before, context="ep-1")
    # The context still binds under the previous secret.
    with pytest.raises(SecretBoxError):
        rotating.open(sealed_before, context="ep-2")
