"""Standard Webhooks signatures (``aiki.worker_sdk.protocol.webhooks``): the published test vector,
and every way a delivery fails verification; and the endpoint's replay guard."""

from __future__ import annotations

import pytest

from aiki.worker_sdk._endpoint_asgi import ReplayGuard
from aiki.worker_sdk.protocol.webhooks import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    new_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)

# https://github.com/standard-webhooks/standard-webhooks (the libraries' shared test vector)
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"type":"activation"}'


def _headers(secrets: list[str], msg_id: str = "run-1.3", timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return signed_headers(secrets, msg_id, timestamp, body)


def test_sign_matches_the_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD) == VECTOR_SIGNATURE


def test_the_published_test_vector_verifies() -> None:
    headers = {ID_HEADER: VECTOR_ID, TIMESTAMP_HEADER: str(VECTOR_TIMESTAMP), SIGNATURE_HEADER: VECTOR_SIGNATURE}
    assert verify([VECTOR_SECRET], headers, VECTOR_PAYLOAD, now_s=VECTOR_TIMESTAMP) == (VECTOR_ID, VECTOR_TIMESTAMP)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([VECTOR_SECRET], headers, b'{"test": 2432232315}', now_s=VECTOR_TIMESTAMP)


def test_a_signed_delivery_verifies() -> None:
    secret = new_secret()
    assert verify([secret], _headers([secret]), BODY, now_s=NOW) == ("run-1.3", NOW)


def test_a_tampered_body_is_refused() -> None:
    secret = new_secret()
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([secret], _headers([secret]), BODY.replace(b"activation", b"activatioN"), now_s=NOW)


@pytest.mark.parametrize("field", [ID_HEADER, TIMESTAMP_HEADER])
def test_a_tampered_id_or_timestamp_is_refused(field: str) -> None:
    secret = new_secret()
    headers = _headers([secret])
    headers[field] = "run-1.4" if field == ID_HEADER else str(NOW + 1)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([secret], headers, BODY, now_s=NOW)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([new_secret()], _headers([new_secret()]), BODY, now_s=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_a_timestamp_outside_five_minutes_is_refused(offset: int) -> None:
    secret = new_secret()
    headers = _headers([secret], timestamp=NOW + offset)
    with pytest.raises(WebhookVerificationError, match="more than 300 s from now"):
        verify([secret], headers, BODY, now_s=NOW)


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_a_timestamp_within_five_minutes_verifies(offset: int) -> None:
    secret = new_secret()
    assert verify([secret], _headers([secret], timestamp=NOW + offset), BODY, now_s=NOW) == ("run-1.3", NOW + offset)


def test_during_a_rotation_either_secret_verifies_the_doubly_signed_delivery() -> None:
    old, new, other = new_secret(), new_secret(), new_secret()
    headers = _headers([new, old])
    assert len(headers[SIGNATURE_HEADER].split(" ")) == 2
    assert verify([old], headers, BODY, now_s=NOW)[0] == "run-1.3"  # a receiver not rotated yet
    assert verify([new], headers, BODY, now_s=NOW)[0] == "run-1.3"  # a receiver rotated already
    assert verify([other, new], headers, BODY, now_s=NOW)[0] == "run-1.3"  # a receiver holding both
    with pytest.raises(WebhookVerificationError):
        verify([other], headers, BODY, now_s=NOW)
    # After the grace period the server signs with the new secret only: the old one no longer verifies.
    with pytest.raises(WebhookVerificationError):
        verify([old], _headers([new]), BODY, now_s=NOW)


def test_unknown_signature_versions_and_noise_are_skipped() -> None:
    secret = new_secret()
    headers = _headers([secret])
    headers[SIGNATURE_HEADER] = f"v2,AAAA v1a,BBBB garbage {headers[SIGNATURE_HEADER]}"
    assert verify([secret], headers, BODY, now_s=NOW)[0] == "run-1.3"
    headers[SIGNATURE_HEADER] = "v2,AAAA garbage"
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([secret], headers, BODY, now_s=NOW)


@pytest.mark.parametrize("missing", [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_refused(missing: str) -> None:
    secret = new_secret()
    headers = _headers([secret])
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="missing header"):
        verify([secret], headers, BODY, now_s=NOW)
    headers[missing] = ""
    with pytest.raises(WebhookVerificationError, match="missing header"):
        verify([secret], headers, BODY, now_s=NOW)


@pytest.mark.parametrize("stamp", ["soon", "1.7e9", "", " "])
def test_a_malformed_timestamp_is_refused(stamp: str) -> None:
    secret = new_secret()
    headers = _headers([secret])
    headers[TIMESTAMP_HEADER] = stamp
    with pytest.raises(WebhookVerificationError):
        verify([secret], headers, BODY, now_s=NOW)


@pytest.mark.parametrize("signature", ["v1,", "v1,not base64!", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1"])
def test_a_malformed_signature_is_refused(signature: str) -> None:
    secret = new_secret()
    headers = _headers([secret])
    headers[SIGNATURE_HEADER] = signature
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([secret], headers, BODY, now_s=NOW)


def test_errors_never_echo_the_secret_or_a_signature() -> None:
    secret = new_secret()
    headers = _headers([secret])
    for body, now in ((b"x", NOW), (BODY, NOW + 1000)):
        with pytest.raises(WebhookVerificationError) as caught:
            verify([secret], headers, body, now_s=now)
        text = str(caught.value)
        assert secret[6:] not in text
        assert headers[SIGNATURE_HEADER][3:] not in text


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("whsec_not base64!", "base64"),
        ("whsec_AAAA", "16"),
    ],
)
def test_a_malformed_secret_is_refused(secret: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        secret_key(secret)
    with pytest.raises(ValueError, match=reason):
        sign(secret, "m", NOW, BODY)


def test_new_secrets_are_distinct_and_well_formed() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(secret_key(s)) == 32 for s in secrets)


# -- the endpoint's replay guard -----------------------------------------------------------------


def test_the_replay_guard_refuses_a_fresh_id_once_accepted() -> None:
    guard = ReplayGuard()
    assert guard.accept("run-1.3", expires_at=1300, now=1000)
    assert not guard.accept("run-1.3", expires_at=1300, now=1001)
    assert guard.accept("run-1.4", expires_at=1300, now=1001)


def test_the_replay_guard_forgets_an_id_once_it_expired() -> None:
    guard = ReplayGuard()
    assert guard.accept("a", expires_at=1300, now=1000)
    assert guard.accept("b", expires_at=1400, now=1000)
    assert guard.accept("a", expires_at=1700, now=1300)  # expired at 1300: a stale signature is refused anyway
    assert not guard.accept("b", expires_at=1700, now=1300)
    assert len(guard) == 2


def test_the_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(max_ids=3)
    for i in range(10):
        assert guard.accept(f"id-{i}", expires_at=2000, now=1000)
    assert len(guard) == 3
    assert not guard.accept("id-9", expires_at=2000, now=1000)
    assert guard.accept("id-0", expires_at=2000, now=1000)  # forgotten: the oldest went first
