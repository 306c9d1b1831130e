"""The Endpoints pages' pure decisions: how the register form reads, how health and attempts show."""

from __future__ import annotations

import pytest

from aiki.dashboard import endpoint_views as ev
from aiki.platform.domain.endpoints import DeliveryAttempt, Endpoint, EndpointHealthValue
from aiki.platform.domain.errors import InputInvalid
from aiki.worker_sdk import protocol as p


def _endpoint(**health: object) -> Endpoint:
    values: dict[str, object] = {
        "breaker": "closed",
        "consecutive_failures": 0,
        "breaker_until": None,
        "last_delivery_at": None,
        "last_status_code": None,
        "last_error": None,
        "deliveries_last_hour": 0,
        "failures_last_hour": 0,
        **health,
    }
    return Endpoint(
        id="e1",
        namespace_id="ns",
        url="https://fn.example/aiki",
        versions=(("orders", "1"), ("orders", "2")),
        pools=(),
        concurrency=5,
        timeout_ms=1_500,
        enabled=True,
        secret_hint="whsec_abcdef…",
        created_at=0,
        updated_at=0,
        previous_secret_expires_at=None,
        health=EndpointHealthValue(**values),  # type: ignore[arg-type]
    )


def test_the_form_reads_versions_pools_and_numbers() -> None:
    form = ev.form_values(
        {
            "url": " https://fn.example/aiki ",
            "versions": "orders@1\r\norders@2, billing@v3 ",
            "pools": "fast, gpu",
            "concurrency": "4",
            "timeout_s": "20",
        }
    )
    req = ev.create_request(form)
    assert req.url == "https://fn.example/aiki"
    assert req.versions == [
        p.VersionRef("orders", "1"),
        p.VersionRef("orders", "2"),
        p.VersionRef("billing", "v3"),
    ]
    assert req.pools == ["fast", "gpu"]
    assert (req.concurrency, req.timeout_ms) == (4, 20_000)
    # A workflow name may itself hold an @: the version is after the last one.
    assert ev.parse_versions("team@orders@1") == [p.VersionRef("team@orders", "1")]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"versions": ""}, "versions"),
        ({"versions": "orders"}, "versions"),
        ({"versions": "orders@"}, "versions"),
        ({"versions": "@1"}, "versions"),
        ({"versions": " ".join(f"w@{i}" for i in range(101))}, "versions"),
        ({"versions": "w@1", "concurrency": "-1"}, "concurrency"),
        ({"versions": "w@1", "concurrency": "1e9"}, "concurrency"),
        ({"versions": "w@1", "concurrency": "9" * 40}, "concurrency"),
        ({"versions": "w@1", "timeout_s": "ten"}, "timeout_s"),
    ],
)
def test_form_mistakes_name_their_field(fields: dict[str, str], field: str) -> None:
    with pytest.raises(InputInvalid) as caught:
        ev.create_request(ev.form_values({"url": "https://fn.example", **fields}))
    assert caught.value.field == field


def test_grace_hours() -> None:
    assert ev.grace_ms("") == 24 * 3_600_000
    assert ev.grace_ms(None) == 24 * 3_600_000
    assert ev.grace_ms("0") == 0
    assert ev.grace_ms("2") == 7_200_000
    for bad in ("-1", "1.5", "721", "x"):
        with pytest.raises(InputInvalid):
            ev.grace_ms(bad)


def test_an_endpoint_row_shows_health() -> None:
    quiet = ev.endpoint_row(_endpoint(), "/ui/ns/n/endpoints")
    assert quiet.href == "/ui/ns/n/endpoints/e1"
    assert quiet.versions == ["orders@1", "orders@2"]
    assert quiet.pools == ["default"]
    assert quiet.timeout == "1.5 s"
    assert (quiet.last_delivery, quiet.failure_rate, quiet.breaker_class) == ("never", "no deliveries", "ok")
    failing = ev.endpoint_row(
        _endpoint(
            breaker="open",
            breaker_until=1_000,
            last_delivery_at=500,
            last_status_code=503,
            deliveries_last_hour=8,
            failures_last_hour=6,
        ),
        "/x",
    )
    assert failing.breaker_class == "bad"
    assert failing.breaker_until == "1970-01-01 00:00:01 UTC"
    assert failing.last_status == "503"
    assert failing.failure_rate == "6 of 8 failed (75%)"
    assert failing.failure_class == "bad"
    assert ev.breaker_class("half_open") == "waiting"


def test_delivery_rows() -> None:
    a = DeliveryAttempt(
        id=1,
        endpoint_id="01a2-endpoint-id-0001",
        run_id="r1",
        revision=3,
        attempt=2,
        outcome="timeout",
        status_code=None,
        latency_ms=30_000,
        error="no answer",
        created_at=0,
    )
    (row,) = ev.delivery_rows([a], "/e", "/r")
    assert (row.endpoint_href, row.run_href) == ("/e/01a2-endpoint-id-0001", "/r/r1")
    assert (row.status_code, row.latency, row.outcome_class) == ("", "30000 ms", "bad")
    assert row.endpoint_label == "…" + a.endpoint_id[-12:]
    (named,) = ev.delivery_rows([a], "/e", "/r", {"01a2-endpoint-id-0001": "https://fn.example"})
    assert named.endpoint_label == "https://fn.example"
    assert ev.outcome_class("handed_back") == "ok"
    assert ev.outcome_class("http_error") == "bad"


def test_the_mount_snippet_reads_secrets_from_the_environment() -> None:
    snippet = ev.mount_snippet("https://aiki.example", ["orders@1"])
    assert "from aiki import client, endpoint" in snippet
    assert 'client=client(url="https://aiki.example", api_key=os.environ["AIKI_API_KEY"])' in snippet
    assert 'secret=os.environ["AIKI_ENDPOINT_SECRET"]' in snippet
    assert "orders@1" in snippet
    compile(snippet, "<snippet>", "exec")  # valid Python
