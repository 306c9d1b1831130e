"""The endpoint app as an ASGI app, without a server: its definition's checks, lifespan, scopes
other than HTTP, bodies, and what it logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest

from aiki import Run, client, endpoint, workflow
from aiki.worker_sdk.protocol import Activation, Delivery
from aiki.worker_sdk.protocol.webhooks import new_secret, signed_headers

wf = workflow("asgi-wf")


@wf.v("1")
async def v1(run: Run, n: int) -> int:
    return n


@wf.v("2")
async def v2(run: Run, n: int) -> int:
    return n


@pytest.fixture
async def stand_in() -> Any:
    """A client whose server answers every command with a completion."""

    def handle(request: httpx.Request) -> httpx.Response:
        commands = msgspec.json.decode(request.content)["commands"]
        return httpx.Response(200, json={"results": [{"transition": {"status": "completed"}} for _ in commands]})

    c = client(transport=httpx.MockTransport(handle))
    yield c
    await c.close()


# -- the definition ------------------------------------------------------------------------------


def test_the_definition_is_checked(stand_in: Any) -> None:
    secret = new_secret()
    with pytest.raises(ValueError, match="workflows: name at least one"):
        endpoint([], client=stand_in, secret=secret)
    with pytest.raises(ValueError, match=r"workflows: asgi-wf@1 is listed twice"):
        endpoint([v1, v2, v1], client=stand_in, secret=secret)
    with pytest.raises(TypeError, match=r"workflows: .* is not a workflow version"):
        endpoint([wf], client=stand_in, secret=secret)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="client: pass an Aiki client"):
        endpoint([v1], client="http://aiki", secret=secret)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_limit must be positive"):
        endpoint([v1], client=stand_in, secret=secret, time_limit=timedelta(0))


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "secret: a signing secret starts with 'whsec_'"),
        ([], "secret: give the endpoint's signing secret"),
        ("s3cr3t-value", "secret: a signing secret starts with 'whsec_'"),
        ("whsec_***", "secret: a signing secret is 'whsec_' followed by base64"),
        ([new_secret(), "whsec_AAAA"], "secret: a signing secret's key must be at least 16 bytes"),
        ([new_secret(), 7], "secret: a signing secret is a string"),
    ],
)
def test_a_bad_secret_is_refused_naming_the_parameter_and_not_echoed(
    stand_in: Any, secret: str | Sequence[str], reason: str
) -> None:
    with pytest.raises(ValueError, match="secret: ") as caught:
        endpoint([v1], client=stand_in, secret=secret)
    assert str(caught.value).startswith(reason)
    assert "s3cr3t" not in str(caught.value)


def test_the_app_keeps_its_secrets_out_of_sight(stand_in: Any) -> None:
    secret = new_secret()
    app = endpoint([v1, v2], client=stand_in, secret=[secret, new_secret()])
    assert sorted(app.versions) == [("asgi-wf", "1"), ("asgi-wf", "2")]
    assert secret not in repr(app)
    assert all(secret not in repr(value) for value in vars(app).values() if not isinstance(value, list))


# -- ASGI ----------------------------------------------------------------------------------------


class Channel:
    """Feeds an app its ``receive`` messages and collects what it ``send``s."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.incoming:
            await asyncio.Event().wait()  # nothing more comes (the test's timeout ends it)
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_lifespan_startup_and_shutdown_are_answered(stand_in: Any) -> None:
    app = endpoint([v1], client=stand_in, secret=new_secret())
    channel = Channel({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, channel.receive, channel.send), 5)
    assert channel.sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_a_websocket_is_closed_and_other_scopes_ignored(stand_in: Any) -> None:
    app = endpoint([v1], client=stand_in, secret=new_secret())
    channel = Channel({"type": "websocket.connect"})
    await asyncio.wait_for(app({"type": "websocket", "path": "/"}, channel.receive, channel.send), 5)
    assert channel.sent == [{"type": "websocket.close", "code": 1008}]
    other = Channel()
    await asyncio.wait_for(app({"type": "telepathy"}, other.receive, other.send), 5)
    assert other.sent == []


def _delivery(version: str = "1") -> bytes:
    activation = Activation(
        run_id="run-1",
        revision=2,
        workflow="asgi-wf",
        version=version,
        attempt=1,
        input=msgspec.Raw(b"5"),
        lease_ttl_ms=9,
    )
    return msgspec.json.encode(
        Delivery(type="activation", endpoint_id="ep", attempt=1, time_limit_ms=5000, activation=activation)
    )


def _scope(headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    raw = [(k.title().encode(), v.encode()) for k, v in headers.items()]  # any case: looked up lower-cased
    return {"type": "http", "method": method, "path": "/under/a/prefix", "headers": raw}


def _answer(channel: Channel) -> tuple[int, Any]:
    start, body = channel.sent
    return start["status"], msgspec.json.decode(body["body"])


async def test_a_body_in_chunks_is_read_whole(stand_in: Any) -> None:
    secret = new_secret()
    app = endpoint([v1], client=stand_in, secret=secret)
    body = _delivery()
    headers = signed_headers([secret], "m-1", int(time.time()), body)
    half = len(body) // 2
    channel = Channel(
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    )
    await asyncio.wait_for(app(_scope(headers), channel.receive, channel.send), 5)
    assert _answer(channel) == (200, {"outcome": "completed", "run_id": "run-1", "revision": 2})


async def test_a_body_over_the_limit_is_refused_as_it_arrives(stand_in: Any) -> None:
    app = endpoint([v1], client=stand_in, secret=new_secret())
    app.max_body_bytes = 10
    channel = Channel(
        {"type": "http.request", "body": b"x" * 6, "more_body": True},
        {"type": "http.request", "body": b"x" * 6, "more_body": True},
    )
    await asyncio.wait_for(app(_scope({}), channel.receive, channel.send), 5)
    assert _answer(channel) == (413, {"error": "the body is larger than 10 bytes"})
    declared = Channel()
    await asyncio.wait_for(app(_scope({"content-length": "11"}), declared.receive, declared.send), 5)
    assert _answer(declared)[0] == 413


async def test_a_client_gone_before_its_body_gets_no_answer(stand_in: Any) -> None:
    app = endpoint([v1], client=stand_in, secret=new_secret())
    channel = Channel({"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"})
    await asyncio.wait_for(app(_scope({}), channel.receive, channel.send), 5)
    assert channel.sent == []


async def test_the_logs_never_show_the_secret_or_a_signature(stand_in: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = new_secret()
    app = endpoint([v1], client=stand_in, secret=secret)
    body = _delivery()
    good = signed_headers([secret], "m-2", int(time.time()), body)
    bad = signed_headers([new_secret()], "m-3", int(time.time()), body)
    caplog.set_level(logging.DEBUG)
    for headers in (good, good, bad):  # accepted, replayed, refused
        channel = Channel({"type": "http.request", "body": body})
        await asyncio.wait_for(app(_scope(headers), channel.receive, channel.send), 5)
    assert "m-2" in caplog.text  # the deliveries are logged ...
    for sensitive in (secret, secret[6:], good["webhook-signature"][3:], bad["webhook-signature"][3:]):
        assert sensitive not in caplog.text  # ... their secrets and signatures are not
