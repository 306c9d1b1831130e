"""Acceptance 2, in Chromium against one real `aiki server` process on PostgreSQL: a `viewer` who
joined by invitation sees runs but no cancel button, and a forged cancel is refused; a key revoked
in the browser stops working; the namespace switcher shows only that namespace's runs; schedules
pause and resume from their page.

Runs here are started against a version registered through the worker protocol with no worker
claiming them, so they stay live (``queued``) for as long as a test needs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import db_support
from tests.dashboard.browser import PASSWORD, Procs, screenshot_dir, start_server
from tests.dashboard.conftest import in_thread

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

WORKFLOW, VERSION = "roles-wf", "1"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = in_thread(db_support.create_pg_database("aiki_dash"))
    procs = Procs(tmp_path_factory.mktemp("roles-server"))
    try:
        yield start_server(procs, db_support.pg_url(name))
    finally:
        procs.stop()
        print(procs.output())
        in_thread(db_support.drop_pg_database(name))


@dataclass
class Team:
    """A team signed up through the API; ``http`` carries the owner's session cookie."""

    email: str
    http: httpx.Client
    org_id: str
    namespace_id: str

    def key(self, role: str, namespace_id: str | None = None) -> str:
        ns = namespace_id or self.namespace_id
        made = self.http.post(f"/api/v1/namespaces/{ns}/api-keys", json={"name": f"{role} key", "role": role})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


def _signup(base: str, label: str) -> Team:
    email = f"{label}-{uuid.uuid4().hex[:6]}@roles.example"
    http = httpx.Client(base_url=base.replace("localhost", "127.0.0.1"), timeout=30, headers={"origin": base})
    signed = http.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "organization": label})
    assert signed.status_code == 201, signed.text
    # The cookie is Secure and this client speaks plain http: send it by hand.
    cookie = signed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    http.headers["cookie"] = f"aiki_session={cookie}"
    body = signed.json()
    return Team(email, http, body["organization"]["id"], body["namespace"]["id"])


def _key_client(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base.replace("localhost", "127.0.0.1"), headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def _start_runs(base: str, key: str, n: int, tag: str) -> list[str]:
    with _key_client(base, key) as api:
        registered = api.post(
            "/api/v1/workers/register",
            json={"worker_id": f"w-{tag}", "host": "test", "versions": [{"workflow": WORKFLOW, "version": VERSION}]},
        )
        assert registered.status_code == 200, registered.text
        ids = []
        for i in range(n):
            started = api.post("/api/v1/runs", json={"workflow": WORKFLOW, "version": VERSION, "input": f"{tag}{i}"})
            assert started.status_code == 201, started.text
            ids.append(str(started.json()["run"]["id"]))
        return ids


def _login(page: Any, base: str, email: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/ui/login")
    page.screenshot(path=str(screenshot_dir() / "00-login.png"), full_page=True)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-menu summary")).to_have_text(email)


def test_a_viewer_sees_runs_but_cannot_cancel_them(page: Any, chromium: Any, base: str) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir()
    owner = _signup(base, "owners")
    run_id = _start_runs(base, owner.key("worker"), 1, "viewer")[0]
    viewer_email = f"viewer-{uuid.uuid4().hex[:6]}@roles.example"

    # The owner invites a viewer of the namespace; the link is shown once.
    _login(page, base, owner.email)
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email").fill(viewer_email)
    page.locator("select[name=namespace_id]").select_option(owner.namespace_id)
    page.locator("select[name=namespace_role]").select_option("viewer")
    page.get_by_role("button", name="Create invitation link").click()
    link = page.locator("#invitation-link").inner_text().strip()
    assert link.startswith(f"{base}/invitations/accept?token=")
    expect(page.locator("#invitations")).to_contain_text(viewer_email)
    page.screenshot(path=str(shots / "10-members-invitation.png"), full_page=True)

    # The invitee opens the link in another browser, signs up and accepts.
    other = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        viewer = other.new_page()
        viewer.goto(link)
        viewer.get_by_role("link", name="Sign up").click()
        viewer.get_by_label("Email").fill(viewer_email)
        viewer.get_by_label("Password").fill(PASSWORD)
        viewer.get_by_role("button", name="Create account").click()
        viewer.get_by_role("button", name="Accept the invitation").click()
        viewer.goto(f"{base}/ui/ns/{owner.namespace_id}/runs")
        expect(viewer.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
        expect(viewer.get_by_role("link", name="API keys")).to_have_count(0)
        viewer.locator(f'tr[data-run-id="{run_id}"] a').click()
        expect(viewer.locator("#run-status")).to_have_text("queued")
        expect(viewer.locator("[data-action]")).to_have_count(0)
        viewer.screenshot(path=str(shots / "11-viewer-run-without-actions.png"), full_page=True)

        # A forged cancel, with the viewer's own valid CSRF token and origin, is refused by role.
        token = viewer.locator('input[name="_csrf"]').first.get_attribute("value")
        assert token
        forged = viewer.request.post(
            f"{base}/ui/ns/{owner.namespace_id}/runs/{run_id}/cancel",
            form={"_csrf": token, "confirm": "yes"},
            headers={"origin": base},
            max_redirects=0,
        )
        assert forged.status == 403
        assert "Not allowed" in forged.text()
    finally:
        other.close()
    with _key_client(base, owner.key("read")) as api:
        assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "queued"


def test_a_key_revoked_in_the_browser_stops_working(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    owner = _signup(base, "revokers")
    _login(page, base, owner.email)
    page.goto(f"{base}/ui/ns/{owner.namespace_id}/keys")
    page.get_by_label("Name").fill("ci reader")
    page.get_by_label("Role").select_option("read")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key-value").inner_text().strip()
    with _key_client(base, key) as api:
        assert api.get("/api/v1/runs").status_code == 200
        row = page.locator("#keys tr", has_text="ci reader")
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        expect(page.locator("#keys tr", has_text="ci reader")).to_have_attribute("data-state", "revoked")
        page.screenshot(path=str(screenshot_dir() / "12-api-keys-revoked.png"), full_page=True)
        refused = api.get("/api/v1/runs")
        assert refused.status_code == 401
        assert "revoked" in refused.text
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit")).to_contain_text("api_key.revoke")
    page.screenshot(path=str(screenshot_dir() / "14-audit-log.png"), full_page=True)


def test_the_namespace_switcher_shows_only_that_namespaces_runs(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    owner = _signup(base, "switchers")
    made = owner.http.post(f"/api/v1/organizations/{owner.org_id}/namespaces", json={"name": "staging"})
    assert made.status_code == 201, made.text
    staging = made.json()["id"]
    in_default = _start_runs(base, owner.key("worker"), 2, "d")
    in_staging = _start_runs(base, owner.key("worker", staging), 2, "s")

    _login(page, base, owner.email)
    page.goto(f"{base}/ui/ns/{owner.namespace_id}/runs")
    for run_id in in_default:
        expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
    expect(page.locator("tr[data-run-id]")).to_have_count(2)

    page.locator("#ns-switcher summary").click()
    page.locator("#ns-switcher").get_by_role("link", name="staging").click()
    expect(page.locator("#ns-switcher summary")).to_contain_text("staging")
    for run_id in in_staging:
        expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
    expect(page.locator("tr[data-run-id]")).to_have_count(2)
    assert re.search(f"/ui/ns/{staging}/runs", page.url)


def test_schedules_pause_and_resume_from_their_page(page: Any, base: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    owner = _signup(base, "schedulers")
    admin_key = owner.key("admin")
    _start_runs(base, admin_key, 0, "sched")  # registers the version
    with _key_client(base, admin_key) as api:
        made = api.post(
            "/api/v1/schedules",
            json={"workflow": WORKFLOW, "version": VERSION, "input": "tick", "every_ms": 3_600_000},
        )
        assert made.status_code in (200, 201), made.text
        schedule_id = made.json()["schedule"]["id"]

        _login(page, base, owner.email)
        page.get_by_role("link", name="Schedules").click()
        row = page.locator(f'tr[data-schedule-id="{schedule_id}"]')
        expect(row).to_have_attribute("data-status", "active")
        row.get_by_role("button", name="Pause").click()
        expect(page.locator(f'tr[data-schedule-id="{schedule_id}"]')).to_have_attribute("data-status", "paused")
        assert api.get(f"/api/v1/schedules/{schedule_id}").json()["status"] == "paused"
        page.screenshot(path=str(screenshot_dir() / "13-schedules-paused.png"), full_page=True)
        page.locator(f'tr[data-schedule-id="{schedule_id}"]').get_by_role("button", name="Resume").click()
        expect(page.locator(f'tr[data-schedule-id="{schedule_id}"]')).to_have_attribute("data-status", "active")
        assert api.get(f"/api/v1/schedules/{schedule_id}").json()["status"] == "active"
