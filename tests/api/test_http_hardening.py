"""Hostile requests on the request path (issue 11, the "Low" items): API keys on dashboard pages,
JSON nested a thousand deep, control characters in paths and logs, the session cookie's CSRF
defence on the JSON API, media types, security headers and the client address behind proxies.
Both databases, in process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from aiki.api.json_depth import MAX_JSON_DEPTH
from aiki.api.response_headers import HSTS
from aiki.dashboard.web import PEOPLE_ONLY
from aiki.platform import logs
from tests.api.test_http_basics import assert_problem
from tests.dashboard.support import csrf_of
from tests.iam_support import API, BASE_URL, PASSWORD, IamHarness, Person

OURS = {"origin": BASE_URL}
FOREIGN = {"origin": "https://evil.example"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def aiki_log() -> Iterator[io.StringIO]:
    """What the ``aiki`` loggers write, through the text formatter of ``aiki server``'s logs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.EscapingFormatter(logs.TEXT_FORMAT))
    logger = logging.getLogger("aiki")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def _owner_with_key(iam_aiki: IamHarness, email: str) -> tuple[Person, httpx.AsyncClient]:
    owner = await iam_aiki.signup(email)
    key = (await iam_aiki.create_key(owner, "admin"))["key"]
    return owner, iam_aiki.key_http(key)


# -- API keys on dashboard pages -------------------------------------------------------------------


async def test_an_api_key_on_a_dashboard_page_is_answered_like_no_session(iam_aiki: IamHarness) -> None:
    owner, key_http = await _owner_with_key(iam_aiki, "key-on-page@hard.example")
    anonymous = iam_aiki.new_http()
    for page in (f"/ui/ns/{owner.namespace_id}/runs", f"/ui/orgs/{owner.org_id}/members", "/ui/home"):
        with_key = await key_http.get(page)
        without = await anonymous.get(page)
        assert with_key.status_code == without.status_code == 303, (page, with_key.status_code, with_key.text)
        assert with_key.headers["location"] == without.headers["location"]
        assert with_key.headers["location"].startswith("/ui/login")
        # htmx asks for a client-side redirect, as without a session.
        hx = await key_http.get(page, headers={"hx-request": "true"})
        assert hx.headers.get("hx-redirect", "").startswith("/ui/login"), hx.text
    # The key still works on the API, and the flag the guard reads is the dashboard's.
    assert (await key_http.get(f"{API}/runs")).status_code == 200
    assert PEOPLE_ONLY == "people_only"


# -- JSON depth ------------------------------------------------------------------------------------


async def test_json_nested_a_thousand_deep_is_400_without_a_traceback(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    owner, key_http = await _owner_with_key(iam_aiki, "deep@hard.example")
    deep = _nested(1000)
    anonymous = iam_aiki.new_http()
    json_type = {"content-type": "application/json"}
    caplog.set_level(logging.INFO)
    answers = [
        await anonymous.post(f"{API}/auth/login", content=deep, headers=json_type),
        await anonymous.post(f"{API}/auth/signup", content='{"email": ' + deep + "}", headers=json_type),
        await key_http.post(
            f"{API}/runs", content='{"workflow": "w", "version": "1", "input": ' + deep + "}", headers=json_type
        ),
        await key_http.post(f"{API}/workers/commands", content='{"commands": [' + deep + "]}", headers=json_type),
        await key_http.post(f"{API}/workers/register", content="{" + '"a":{' * 1000 + "}" * 1001, headers=json_type),
        await owner.http.post(f"{API}/namespaces/{owner.namespace_id}/api-keys", content=deep, headers=json_type),
    ]
    for resp in answers:
        body = assert_problem(resp, 400, "malformed_json")
        assert str(MAX_JSON_DEPTH) in body["detail"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert "RecursionError" not in caplog.text


async def test_json_nested_within_the_limit_is_accepted(iam_aiki: IamHarness) -> None:
    _, key_http = await _owner_with_key(iam_aiki, "shallow@hard.example")
    # The body nests the input one level deeper than the input itself.
    payload = {"workflow": "w", "version": "1", "input": json.loads(_nested(MAX_JSON_DEPTH - 1))}
    ok = await key_http.post(f"{API}/runs", json=payload)
    assert ok.status_code == 201, ok.text
    payload["input"] = json.loads(_nested(MAX_JSON_DEPTH))
    assert_problem(await key_http.post(f"{API}/runs", json=payload), 400, "malformed_json")
    # Brackets inside strings nest nothing.
    strings = {"workflow": "w", "version": "1", "input": {"text": _nested(5000)}}
    assert (await key_http.post(f"{API}/runs", json=strings)).status_code == 201


# -- control characters in paths and logs ----------------------------------------------------------


async def test_control_characters_in_paths_are_404_never_500(iam_aiki: IamHarness) -> None:
    owner, key_http = await _owner_with_key(iam_aiki, "nul@hard.example")
    ns = owner.namespace_id
    dashboard = [
        f"/ui/ns/{ns}/runs/%00",
        f"/ui/ns/{ns}/runs/abc%00def",
        f"/ui/ns/{ns}/runs/%0a",
        "/ui/static/%00",
        "/ui/static/htmx.min.js%00.png",
        "/ui/static/%0d%0a",
    ]
    for path in dashboard:
        resp = await owner.http.get(path)
        assert resp.status_code == 404, (path, resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("text/html")
    api = [f"{API}/runs/%00", f"{API}/runs/a%0ab", f"{API}/schedules/%7f", f"{API}/runs/%00/cancel"]
    for path in api:
        resp = await key_http.get(path) if not path.endswith("cancel") else await key_http.post(path, json={})
        assert_problem(resp, 404, "not_found")
    # Anonymous callers meet the same answer (a public route, and a private one).
    assert (await iam_aiki.new_http().get("/ui/static/%00")).status_code == 404
    assert (await iam_aiki.new_http().get(f"{API}/runs/%00")).status_code in (401, 404)


async def test_a_forged_line_in_a_path_is_logged_escaped_on_one_line(
    iam_aiki: IamHarness, aiki_log: io.StringIO
) -> None:
    forged = "2026-01-01 00:00:00,000 ERROR aiki.api: FORGED admin logged in"
    path = f"{API}/runs/x%0a{forged.replace(' ', '%20')}%0d%1b[31m"
    resp = await iam_aiki.new_http().get(path)
    assert resp.status_code == 404
    lines = aiki_log.getvalue().splitlines()
    hits = [line for line in lines if "FORGED" in line]
    assert len(hits) == 1, lines
    assert "refused a request whose path holds control characters" in hits[0]
    assert "x\\n2026-01-01" in hits[0]
    assert "\\r\\x1b[31m" in hits[0]
    assert not any(line.startswith("2026-01-01") for line in lines)


def test_the_json_format_writes_one_object_per_record_whatever_it_holds() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.json_formatter())
    logger = logging.getLogger("tests.json_log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("path %s", "/a\n2026 ERROR forged\r\x00")
        try:
            raise ValueError("broken\nline")
        except ValueError:
            logger.exception("failed on %s", "/b\nforged")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "path /a\n2026 ERROR forged\r\x00"
    assert first["level"] == "WARNING"
    assert first["logger"] == "tests.json_log"
    assert first["time"]
    assert second["message"] == "failed on /b\nforged"
    assert "ValueError: broken\nline" in second["exc_info"]


def test_the_text_format_escapes_messages_and_indents_tracebacks() -> None:
    formatter = logs.EscapingFormatter(logs.TEXT_FORMAT)
    record = logging.LogRecord("aiki.x", logging.INFO, __file__, 1, "seen %s", ("a\nb\r\x1b\u2028",), None)
    line = formatter.format(record)
    assert "\n" not in line
    assert line.endswith("seen a\\nb\\r\\x1b\\u2028")
    try:
        raise ValueError("x\n2026-01-01 forged")
    except ValueError:
        import sys

        record = logging.LogRecord("aiki.x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0].endswith("boom")
    assert all(line.startswith("    ") for line in lines[1:]), lines


@pytest.mark.parametrize(
    ("raw", "default", "expected"), [(None, "json", "json"), ("TEXT", "json", "text"), ("", "text", "text")]
)
def test_log_format_setting(raw: str | None, default: Any, expected: str) -> None:
    assert logs.parse_log_format(raw, default) == expected


def test_a_bad_log_format_names_the_variable() -> None:
    with pytest.raises(ValueError, match="AIKI_LOG_FORMAT must be json or text"):
        logs.parse_log_format("xml", "json")


# -- the session cookie on the JSON API ------------------------------------------------------------


async def _key_count(person: Person) -> int:
    listed = await person.http.get(f"{API}/namespaces/{person.namespace_id}/api-keys")
    assert listed.status_code == 200, listed.text
    return len(listed.json())


async def test_unsafe_cookie_requests_need_our_origin_or_the_csrf_token(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("cookie@hard.example")
    other = await iam_aiki.signup("other-cookie@hard.example")
    # A session as a cross-site page would use it: the cookie and nothing else.
    bare = iam_aiki.new_http()
    logged = await bare.post(f"{API}/auth/login", json={"email": owner.email, "password": PASSWORD})
    assert logged.status_code == 200, logged.text
    token = csrf_of((await bare.get(f"/ui/ns/{owner.namespace_id}/runs")).text)
    others_token = csrf_of((await other.http.get(f"/ui/ns/{other.namespace_id}/runs")).text)
    keys = f"{API}/namespaces/{owner.namespace_id}/api-keys"
    body = {"name": "k", "role": "read"}

    refused = [
        await bare.post(keys, json=body),
        await bare.post(keys, json=body, headers={"sec-fetch-site": "cross-site"}),
        await bare.post(keys, json=body, headers={"x-csrf-token": others_token}),
        await bare.post(keys, json=body, headers={"x-csrf-token": ""}),
        await bare.post(keys, json=body, headers={**FOREIGN, "x-csrf-token": token}),
        await bare.post(keys, json=body, headers={"origin": "null"}),
    ]
    for resp in refused:
        problem = assert_problem(resp, 403, "forbidden")
        assert "session cookie" in problem["detail"] or "cross-origin" in problem["detail"]
    # The text/plain body a cross-site form can send is refused for its media type first.
    plain = await bare.post(keys, content=json.dumps(body), headers={"content-type": "text/plain"})
    assert_problem(plain, 415, "unsupported_media_type")
    # An untyped body (a cross-site fetch of a Blob) is read as JSON, and refused for its origin.
    untyped = await bare.post(keys, content=json.dumps(body))
    assert "content-type" not in untyped.request.headers
    assert_problem(untyped, 403, "forbidden")
    assert await _key_count(owner) == 0

    accepted = [
        await bare.post(keys, json=body, headers=OURS),
        await bare.post(keys, json=body, headers={"sec-fetch-site": "same-origin"}),
        await bare.post(keys, json=body, headers={"x-csrf-token": token}),
    ]
    assert [r.status_code for r in accepted] == [201, 201, 201], [r.text for r in accepted]
    made = accepted[0].json()["api_key"]["id"]
    # DELETE is unsafe too.
    assert_problem(await bare.delete(f"{keys}/{made}"), 403, "forbidden")
    assert (await bare.delete(f"{keys}/{made}", headers=OURS)).status_code in (200, 204)


async def test_api_keys_need_no_origin_but_json_bodies(iam_aiki: IamHarness) -> None:
    _, key_http = await _owner_with_key(iam_aiki, "keys-json@hard.example")
    run = {"workflow": "w", "version": "1", "input": {}}
    assert (await key_http.post(f"{API}/runs", json=run)).status_code == 201
    assert (await key_http.post(f"{API}/runs", json=run, headers=FOREIGN)).status_code == 201
    charset = {"content-type": "application/json; charset=utf-8"}
    assert (await key_http.post(f"{API}/runs", content=json.dumps(run), headers=charset)).status_code == 201
    for media_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = await key_http.post(f"{API}/runs", content=json.dumps(run), headers={"content-type": media_type})
        problem = assert_problem(resp, 415, "unsupported_media_type")
        assert "application/json" in problem["detail"]
    # A body without a Content-Type is read as JSON (scripts often send none) ...
    untyped = await key_http.post(f"{API}/runs", content=json.dumps(run))
    assert "content-type" not in untyped.request.headers
    assert untyped.status_code == 201, untyped.text
    # ... and a request without a body needs none, whatever it is labelled.
    run_id = (await key_http.post(f"{API}/runs", json=run)).json()["run"]["id"]
    paused = await key_http.post(f"{API}/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text
    # aiohttp (the SDK's network client) labels a bodiless POST application/octet-stream.
    resumed = await key_http.post(f"{API}/runs/{run_id}/resume", headers={"content-type": "application/octet-stream"})
    assert resumed.status_code == 200, resumed.text


# -- security headers ------------------------------------------------------------------------------


def _no_store(resp: httpx.Response) -> bool:
    return "no-store" in resp.headers.get("cache-control", "")


async def test_responses_with_secrets_are_not_stored_and_nothing_is_sniffed(iam_aiki: IamHarness) -> None:
    anonymous = iam_aiki.new_http(OURS)
    pending = await anonymous.post(f"{API}/auth/signup", json={"email": "hdr@hard.example", "password": PASSWORD})
    assert pending.status_code == 202, pending.text
    token = iam_aiki.last_token("hdr@hard.example", "/ui/verify-email")
    signed = await anonymous.post(f"{API}/auth/verify-email", json={"token": token})
    assert signed.status_code == 200, signed.text
    assert "set-cookie" in signed.headers
    body = signed.json()
    login = await anonymous.post(f"{API}/auth/login", json={"email": "hdr@hard.example", "password": PASSWORD})
    key = await anonymous.post(
        f"{API}/namespaces/{body['namespace']['id']}/api-keys", json={"name": "k", "role": "read"}
    )
    invitation = await anonymous.post(
        f"{API}/organizations/{body['organization']['id']}/invitations", json={"email": "guest@hard.example"}
    )
    assert key.status_code == invitation.status_code == 201
    for resp in (pending, signed, login, key, invitation):
        assert _no_store(resp), (resp.request.url, resp.headers)
        assert resp.headers["x-content-type-options"] == "nosniff"
    others = [
        await anonymous.get("/health"),
        await anonymous.get(f"{API}/runs/nothing-here", headers={"x-aiki-namespace": body["namespace"]["id"]}),
        await anonymous.get("/no/such/route"),
        await iam_aiki.new_http().get(f"{API}/runs"),  # 401
        await anonymous.get("/ui/login"),
    ]
    for resp in others:
        assert resp.headers["x-content-type-options"] == "nosniff", (resp.request.url, resp.headers)
        assert _no_store(resp), (resp.request.url, resp.headers)
        assert "strict-transport-security" not in resp.headers  # the base URL is http
    schema = await anonymous.get("/schema/openapi.json")
    assert schema.headers["x-content-type-options"] == "nosniff"


@pytest.fixture
async def https_aiki(db_url: str) -> AsyncIterator[IamHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, base_url="https://aiki.example").start()
    try:
        yield harness
    finally:
        await harness.close()


async def test_hsts_on_every_response_when_the_base_url_is_https(https_aiki: IamHarness) -> None:
    http = https_aiki.new_http()
    for resp in (
        await http.get("/health"),
        await http.get(f"{API}/runs"),
        await http.get("/ui/login"),
        await http.get("/ui/static/%00"),
        await http.get("/nowhere"),
        await http.post(f"{API}/auth/login", json={"email": "x@y.example", "password": "wrong-password"}),
    ):
        assert resp.headers.get("strict-transport-security") == HSTS, (resp.request.url, resp.headers)


# -- the client address ----------------------------------------------------------------------------


async def _signup_ip(harness: IamHarness, email: str, forwarded_for: str) -> str | None:
    http = harness.new_http({**OURS, "x-forwarded-for": forwarded_for})
    pending = await http.post(f"{API}/auth/signup", json={"email": email, "password": PASSWORD})
    assert pending.status_code == 202, pending.text
    token = harness.last_token(email, "/ui/verify-email")
    signed = await http.post(f"{API}/auth/verify-email", json={"token": token})
    assert signed.status_code == 200, signed.text
    org_id = signed.json()["organization"]["id"]
    entries = (await http.get(f"{API}/organizations/{org_id}/audit")).json()
    ips = {e["ip"] for e in entries["items"]}
    assert len(ips) == 1, entries
    return ips.pop()


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(iam_aiki: IamHarness, db_url: str) -> None:
    # httpx's in-process transport connects from 127.0.0.1.
    assert await _signup_ip(iam_aiki, "direct@hard.example", "203.0.113.9") == "127.0.0.1"
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    behind = await IamHarness(kind, db_url, server_options={"trusted_proxies": "127.0.0.0/8, 10.0.0.0/8"}).start()
    try:
        assert await _signup_ip(behind, "proxied@hard.example", "203.0.113.9") == "203.0.113.9"
        # The rightmost hop that is not a trusted proxy: what the client wrote to the left is not believed.
        assert await _signup_ip(behind, "chain@hard.example", "198.51.100.1, 203.0.113.7, 10.1.2.3") == "203.0.113.7"
        # A chain of garbage keeps the peer.
        assert await _signup_ip(behind, "garbage@hard.example", "not-an-ip") == "127.0.0.1"
    finally:
        await behind.close()


async def test_nul_in_dashboard_filters_and_forms_is_400_never_500(iam_aiki: IamHarness) -> None:
    from tests.dashboard.support import signup as dashboard_signup

    browser = await dashboard_signup(iam_aiki, "nul-filter@hard.example")
    runs = f"/ui/ns/{browser.namespace_id}/runs"
    for query in ("workflow=%00", "reference_id=a%00b", "version=%00"):
        resp = await browser.http.get(f"{runs}?{query}")
        assert resp.status_code in (200, 400), (query, resp.status_code)  # SQLite stores NUL; PostgreSQL cannot
        assert resp.headers["content-type"].startswith("text/html")
    made = await browser.post(f"/ui/ns/{browser.namespace_id}/keys", {"name": "a\x00b", "role": "read"})
    assert made.status_code in (200, 303, 400, 422), made.status_code
