"""Who may see and do what in the dashboard: the API's policy applies to its pages. Another
organization's pages do not exist (404), a viewer reads but may not act (403), and the cancel
form works without JavaScript through a confirmation page."""

from __future__ import annotations

import re

import pytest

from tests.dashboard.support import ORIGIN, UI, Browser, csrf_of, signup
from tests.iam_support import API, PASSWORD, IamHarness


async def _queued_run(harness: IamHarness, browser: Browser) -> str:
    made = await browser.http.post(
        f"{API}/namespaces/{browser.namespace_id}/api-keys", json={"name": "w", "role": "worker"}, headers=ORIGIN
    )
    api = harness.key_http(made.json()["key"])
    reg = await api.post(
        f"{API}/workers/register",
        json={"worker_id": "w-access", "host": "h", "versions": [{"workflow": "acc-wf", "version": "1"}]},
    )
    assert reg.status_code == 200, reg.text
    started = await api.post(f"{API}/runs", json={"workflow": "acc-wf", "version": "1", "input": 1})
    assert started.status_code == 201, started.text
    return str(started.json()["run"]["id"])


async def test_another_organizations_pages_do_not_exist(iam_aiki: IamHarness) -> None:
    alice = await signup(iam_aiki, "alice@access.example")
    bob = await signup(iam_aiki, "bob@access.example")
    run_id = await _queued_run(iam_aiki, alice)
    for path in (
        f"{UI}/ns/{alice.namespace_id}/runs",
        f"{UI}/ns/{alice.namespace_id}/runs/{run_id}",
        f"{UI}/ns/{alice.namespace_id}/keys",
        f"{UI}/ns/{alice.namespace_id}/workers",
        f"{UI}/ns/{alice.namespace_id}/schedules",
    ):
        resp = await bob.http.get(path)
        assert resp.status_code == 404, path
        assert run_id not in resp.text
    token = await bob.csrf()
    resp = await bob.http.post(
        f"{UI}/ns/{alice.namespace_id}/runs/{run_id}/cancel", data={"_csrf": token, "confirm": "yes"}, headers=ORIGIN
    )
    assert resp.status_code == 404
    run = await alice.http.get(f"{API}/runs/{run_id}", headers={"x-aiki-namespace": alice.namespace_id})
    assert run.json()["status"] == "queued"


async def test_a_viewer_reads_runs_but_is_refused_actions_and_keys(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@access.example")
    browser = Browser(owner.http, owner.namespace_id or "", owner.email)
    run_id = await _queued_run(iam_aiki, browser)
    viewer_person = await iam_aiki.invite_and_join(owner, "viewer@access.example", namespace_role="viewer")
    viewer = Browser(viewer_person.http, owner.namespace_id or "", viewer_person.email)
    page = await viewer.http.get(f"{UI}/ns/{viewer.namespace_id}/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-status="queued"' in page.text
    assert "data-action=" not in page.text
    assert "/keys" not in page.text  # no API keys link for a viewer
    token = csrf_of(page.text)
    for action in ("cancel", "pause"):
        resp = await viewer.http.post(
            f"{UI}/ns/{viewer.namespace_id}/runs/{run_id}/{action}",
            data={"_csrf": token, "confirm": "yes"},
            headers=ORIGIN,
        )
        assert resp.status_code == 403, action
        assert "Not allowed" in resp.text
    assert (await viewer.http.get(f"{UI}/ns/{viewer.namespace_id}/keys")).status_code == 403
    # The owner's page offers the actions a queued run allows.
    owner_page = await owner.http.get(f"{UI}/ns/{owner.namespace_id}/runs/{run_id}")
    assert re.findall(r'data-action="(\w+)"', owner_page.text) == ["cancel", "pause"]


async def test_cancel_without_javascript_asks_on_a_page_then_cancels(iam_aiki: IamHarness) -> None:
    owner = await signup(iam_aiki, "nojs@access.example")
    run_id = await _queued_run(iam_aiki, owner)
    path = f"{UI}/ns/{owner.namespace_id}/runs/{run_id}"
    token = await owner.csrf(path)
    asked = await owner.http.post(f"{path}/cancel", data={"_csrf": token}, headers=ORIGIN)
    assert asked.status_code == 200
    assert "Yes, cancel the run" in asked.text
    assert 'data-status="queued"' in (await owner.http.get(path)).text  # asking changed nothing
    done = await owner.http.post(f"{path}/cancel", data={"_csrf": token, "confirm": "yes"}, headers=ORIGIN)
    assert done.status_code == 303
    assert done.headers["location"] == path
    assert 'data-status="cancelled"' in (await owner.http.get(path)).text
    # With HTMX the action answers with the run's fragment; an invalid action reads as a message.
    again = await owner.http.post(f"{path}/pause", data={"_csrf": token}, headers={**ORIGIN, "hx-request": "true"})
    assert again.status_code == 400
    assert again.headers["hx-retarget"] == "#flash"
    assert "cannot pause" in again.text


async def test_htmx_actions_return_the_runs_fragment(iam_aiki: IamHarness) -> None:
    owner = await signup(iam_aiki, "htmx@access.example")
    run_id = await _queued_run(iam_aiki, owner)
    path = f"{UI}/ns/{owner.namespace_id}/runs/{run_id}"
    token = await owner.csrf(path)
    paused = await owner.http.post(f"{path}/pause", headers={**ORIGIN, "x-csrf-token": token, "hx-request": "true"})
    assert paused.status_code == 200
    assert paused.text.lstrip().startswith('<div id="run-detail" data-status="paused"')
    assert re.findall(r'data-action="(\w+)"', paused.text) == ["cancel", "resume"]
    resumed = await owner.http.post(f"{path}/resume", headers={**ORIGIN, "x-csrf-token": token, "hx-request": "true"})
    assert 'data-status="queued"' in resumed.text


async def test_invitation_link_members_and_audit_pages(iam_aiki: IamHarness) -> None:
    owner = await signup(iam_aiki, "org@access.example", organization="Org")
    home = await owner.http.get(f"{UI}/ns/{owner.namespace_id}/runs")
    org_id = re.search(r"/ui/orgs/([^/]+)/members", home.text)
    assert org_id
    members_path = f"{UI}/orgs/{org_id.group(1)}/members"
    token = csrf_of(home.text)
    made = await owner.http.post(
        f"{UI}/orgs/{org_id.group(1)}/invitations",
        data={
            "_csrf": token,
            "email": "new@access.example",
            "role": "member",
            "namespace_id": "",
            "namespace_role": "",
        },
        headers=ORIGIN,
    )
    assert made.status_code == 200, made.text
    link = re.search(r'id="invitation-link">([^<]+)<', made.text)
    assert link
    # The link the invitation names lands on the dashboard's accept page.
    landing = await iam_aiki.new_http().get(link.group(1).replace("http://aiki", ""))
    assert landing.status_code == 303
    assert landing.headers["location"].startswith(f"{UI}/invitations/accept?token=")
    newcomer = await signup(iam_aiki, "new@access.example")
    page = await newcomer.http.get(landing.headers["location"])
    assert "Accept the invitation" in page.text
    accepted = await newcomer.http.post(
        f"{UI}/invitations/accept",
        data={"_csrf": csrf_of(page.text), "token": link.group(1).split("token=", 1)[1]},
        headers=ORIGIN,
    )
    assert accepted.status_code == 303
    members = await owner.http.get(members_path)
    assert "new@access.example" in members.text
    audit = await owner.http.get(f"{UI}/orgs/{org_id.group(1)}/audit")
    assert audit.status_code == 200
    assert "invitation.accept" in audit.text
    assert "user.signup" in audit.text
    # A member of the organization reads members but not the audit log.
    assert (await newcomer.http.get(members_path)).status_code == 200
    assert (await newcomer.http.get(f"{UI}/orgs/{org_id.group(1)}/audit")).status_code == 403
    assert PASSWORD not in audit.text


async def test_namespace_access_roles_are_managed_on_their_page(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("nsowner@access.example")
    member = await iam_aiki.invite_and_join(owner, "member@access.example", namespace_role="viewer")
    path = f"{UI}/ns/{owner.namespace_id}/members"
    page = await owner.http.get(path)
    assert page.status_code == 200
    assert 'data-role="viewer"' in page.text
    token = csrf_of(page.text)
    changed = await owner.http.post(
        path, data={"_csrf": token, "user_id": member.user_id, "role": "member"}, headers=ORIGIN
    )
    assert changed.status_code == 303
    assert 'data-role="member"' in (await owner.http.get(path)).text
    # Now a `member`, they may act on runs but not manage access.
    own_view = await member.http.get(path)
    assert own_view.status_code == 200
    refused = await member.http.post(
        path, data={"_csrf": csrf_of(own_view.text), "user_id": member.user_id, "role": "admin"}, headers=ORIGIN
    )
    assert refused.status_code == 403
    removed = await owner.http.post(f"{path}/{member.user_id}/remove", data={"_csrf": token}, headers=ORIGIN)
    assert removed.status_code == 303
    assert (await member.http.get(f"{UI}/ns/{owner.namespace_id}/runs")).status_code == 404


async def test_runs_are_paged_by_keyset_links_that_keep_the_filters(
    iam_aiki: IamHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiki.dashboard import views

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    owner = await signup(iam_aiki, "pages@access.example")
    ids = [await _queued_run(iam_aiki, owner) for _ in range(5)]
    base = f"{UI}/ns/{owner.namespace_id}/runs"
    seen: list[str] = []
    path = f"{base}?workflow=acc-wf"
    for _ in range(3):
        page = await owner.http.get(path)
        seen += re.findall(r'data-run-id="([^"]+)"', page.text)
        older = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        if older is None:
            break
        path = older.group(1).replace("&amp;", "&")
        assert "workflow=acc-wf" in path
    assert seen == list(reversed(ids))  # newest first, each run once, across three pages


async def test_an_unexpected_error_is_a_readable_page_without_a_trace(
    iam_aiki: IamHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiki.platform.services import queries

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals /srv/app.py line 12")

    owner = await signup(iam_aiki, "boom@access.example")
    monkeypatch.setattr(queries, "list_workers", broken)
    resp = await owner.http.get(f"{UI}/ns/{owner.namespace_id}/workers")
    assert resp.status_code == 500
    assert "Something went wrong" in resp.text
    assert "secret internals" not in resp.text
    assert "Traceback" not in resp.text
    assert resp.headers["content-security-policy"].startswith("default-src 'self'")
