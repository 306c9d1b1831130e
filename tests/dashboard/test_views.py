"""The dashboard's pure parts: view-model builders, CSRF tokens and origin checks, the `next` guard."""

from __future__ import annotations

import msgspec
import pytest

from aiki.dashboard import csrf, views
from aiki.dashboard.web import safe_next
from aiki.iam.models import ApiKeyView
from aiki.platform.domain.errors import InputInvalid
from aiki.platform.domain.inspection import RunPage
from aiki.platform.domain.values import Run


@pytest.mark.parametrize(
    ("status", "actions"),
    [
        ("queued", ["cancel", "pause"]),
        ("running", ["cancel", "pause"]),
        ("scheduled", ["cancel", "pause"]),
        ("paused", ["cancel", "resume"]),
        ("sleeping", ["cancel", "wake"]),
        ("stalled", ["cancel", "requeue"]),
        ("awaiting_event", ["cancel"]),
        ("completed", []),
        ("failed", []),
        ("cancelled", []),
    ],
)
def test_a_run_offers_only_the_actions_its_status_allows(status: str, actions: list[str]) -> None:
    assert views.valid_actions(status) == actions


def _run(status: str, run_id: str = "0190aaaa-0000-7000-8000-000000000001") -> Run:
    return Run(
        id=run_id,
        workflow="wf",
        version="1",
        status=status,
        revision=1,
        attempt=1,
        created_at=1_000,
        updated_at=2_000,
        input='{"a":1}',
        output=None,
        error=None,
        reference_id=None,
        parent_run_id=None,
        pool=None,
        recoveries=0,
        wake_at=None,
        finished_at=2_500 if status == "completed" else None,
    )


def test_the_runs_list_refreshes_only_while_its_first_page_shows_live_runs() -> None:
    filters = views.parse_filters({})
    live = RunPage(items=[_run("completed"), _run("running")], next_cursor="c1")
    done = RunPage(items=[_run("completed")], next_cursor=None)
    assert views.runs_page(live, filters, "/ui/ns/n/runs", None).live
    assert not views.runs_page(done, filters, "/ui/ns/n/runs", None).live
    # A later page is a fixed window: no refresh even with live runs.
    assert not views.runs_page(live, filters, "/ui/ns/n/runs", "cursor").live
    # An empty first page keeps looking for the first runs.
    assert views.runs_page(RunPage(items=[], next_cursor=None), filters, "/ui/ns/n/runs", None).live


def test_keyset_links_keep_the_filters() -> None:
    filters = views.parse_filters({"status": "running", "workflow": "wf"})
    page = views.runs_page(RunPage(items=[_run("running")], next_cursor="abc"), filters, "/b", None)
    assert page.next_href == "/b?status=running&workflow=wf&cursor=abc"
    assert page.first_href is None
    assert page.filtered
    second = views.runs_page(RunPage(items=[_run("running")], next_cursor=None), filters, "/b", "abc")
    assert second.next_href is None
    assert second.first_href == "/b?status=running&workflow=wf"


def test_filters_read_times_and_name_the_bad_field() -> None:
    f = views.parse_filters({"created_after": "2026-01-02T03:04", "created_before": ""}).run_filter
    assert f.created_after == 1767323040000
    assert f.created_before is None
    with pytest.raises(InputInvalid) as bad:
        views.parse_filters({"status": "sleepy"})
    assert bad.value.field == "status"
    with pytest.raises(InputInvalid) as bad:
        views.parse_filters({"created_after": "2026-02-01", "created_before": "2026-01-01"})
    assert bad.value.field == "created_after"


def test_key_rows_show_state_and_put_live_keys_first() -> None:
    def key(i: str, revoked: int | None = None, expires: int | None = None) -> ApiKeyView:
        return ApiKeyView(i, f"aiki_{i}", "ns", i, "worker", 1, expires, revoked, None)

    rows = views.key_rows([key("a", revoked=5), key("b", expires=10), key("c"), key("d", expires=10_000)], 100)
    assert [(r.name, r.state) for r in rows] == [("c", "active"), ("d", "active"), ("a", "revoked"), ("b", "expired")]
    assert rows[0].expires == "never"
    assert rows[0].last_used == "never"


def test_key_expiry_from_days() -> None:
    assert views.expiry_ms("", 0) is None
    assert views.expiry_ms("0", 0) is None
    assert views.expiry_ms("2", 1000) == 1000 + 2 * 86_400_000
    for bad in ("-1", "x", "99999"):
        with pytest.raises(InputInvalid):
            views.expiry_ms(bad, 0)


def test_formatting() -> None:
    assert views.fmt_time(None) == ""
    assert views.fmt_time(0) == "1970-01-01 00:00:00 UTC"
    assert views.fmt_duration(0, 250) == "250 ms"
    assert views.fmt_duration(0, 1500) == "1.5 s"
    assert views.fmt_duration(0, 125_000) == "2 min 5 s"
    assert views.fmt_duration(0, 3_720_000) == "1 h 2 min"
    assert views.pretty_json(msgspec.Raw(b'{"a":[1,2]}')) == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert views.pretty_json(b"not json") == "not json"


def test_csrf_tokens_are_bound_to_the_session_and_the_secret() -> None:
    secret = "s" * 40
    token = csrf.token_for(secret, "session-1")
    assert csrf.token_matches(secret, "session-1", token)
    assert not csrf.token_matches(secret, "session-2", token)
    assert not csrf.token_matches("t" * 40, "session-1", token)
    assert not csrf.token_matches(secret, "session-1", None)
    assert not csrf.token_matches(secret, None, token)


@pytest.mark.parametrize(
    ("origin", "referer", "ok"),
    [
        ("http://aiki", None, True),
        ("http://AIKI/", None, True),
        ("https://aiki", None, False),
        ("http://aiki.evil", None, False),
        ("null", "http://aiki/ui/x", True),
        (None, "http://aiki/ui/x", True),
        (None, "http://aiki.evil/ui/x", False),
        (None, None, False),
    ],
)
def test_same_origin(origin: str | None, referer: str | None, ok: bool) -> None:
    assert csrf.same_origin("http://aiki", origin, referer) is ok


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/ui/ns/x/runs", "/ui/ns/x/runs"),
        ("//evil.example/ui/", None),
        ("https://evil.example/ui/", None),
        ("/api/v1/runs", None),
        ("/ui/\\evil", None),
        (None, None),
    ],
)
def test_login_returns_only_to_dashboard_pages(value: str | None, expected: str | None) -> None:
    assert safe_next(value) == expected
