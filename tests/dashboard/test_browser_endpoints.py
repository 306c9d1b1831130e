"""Push endpoints in Chromium against a real `aiki server` process on PostgreSQL (private URLs
allowed, as `aiki dev` and the tests run it): an admin registers an endpoint and sees its secret
once with the mount code, disables and enables it, rotates the secret (the new one shown once),
deletes it; a viewer sees the endpoints without any control; a run's page lists its deliveries.

The endpoints point at a closed local port and are disabled before any run of their versions is
started, so nothing is delivered here: a run's attempts are written directly into the database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aiki.platform.db.engine import Database
from aiki.platform.db.tables import endpoint_deliveries
from aiki.platform.domain.ids import now_ms
from tests import db_support
from tests.dashboard.browser import PASSWORD, Procs, api, free_port, screenshot_dir, start_server
from tests.dashboard.conftest import in_thread

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]


@dataclass
class Server:
    base: str
    db_url: str


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    name = in_thread(db_support.create_pg_database("aiki_dash"))
    procs = Procs(tmp_path_factory.mktemp("endpoints-server"))
    try:
        url = db_support.pg_url(name)
        yield Server(start_server(procs, url, env={"AIKI_ENDPOINTS_ALLOW_PRIVATE": "1"}), url)
    finally:
        procs.stop()
        print(procs.output())
        in_thread(db_support.drop_pg_database(name))


@dataclass
class Team:
    email: str
    http: httpx.Client
    org_id: str
    namespace_id: str

    def key(self, role: str) -> str:
        made = self.http.post(
            f"/api/v1/namespaces/{self.namespace_id}/api-keys", json={"name": f"{role} key", "role": role}
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


def _signup(base: str, label: str, email: str | None = None) -> Team:
    email = email or f"{label}-{uuid.uuid4().hex[:6]}@endpoints.example"
    http = httpx.Client(base_url=base.replace("localhost", "127.0.0.1"), timeout=30, headers={"origin": base})
    signed = http.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "organization": label})
    assert signed.status_code == 201, signed.text
    cookie = signed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    http.headers["cookie"] = f"aiki_session={cookie}"
    body = signed.json()
    return Team(email, http, body["organization"]["id"], body["namespace"]["id"])


def _viewer_of(base: str, owner: Team) -> str:
    """Invite a viewer of the owner's namespace through the API; their email."""
    email = f"viewer-{uuid.uuid4().hex[:6]}@endpoints.example"
    invited = owner.http.post(
        f"/api/v1/organizations/{owner.org_id}/invitations",
        json={"email": email, "namespace_id": owner.namespace_id, "namespace_role": "viewer"},
    )
    assert invited.status_code == 201, invited.text
    viewer = _signup(base, "viewers", email)
    accepted = viewer.http.post("/api/v1/invitations/accept", json={"token": invited.json()["token"]})
    assert accepted.status_code == 200, accepted.text
    return email


def _login(page: Any, base: str, email: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/ui/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-menu summary")).to_have_text(email)


def test_an_admin_registers_disables_enables_rotates_and_deletes(page: Any, srv: Server) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir()
    owner = _signup(srv.base, "pushers")
    hook = f"http://127.0.0.1:{free_port()}/api/aiki"
    _login(page, srv.base, owner.email)
    page.get_by_role("link", name="Endpoints").click()
    expect(page.locator(".empty-title")).to_have_text("No endpoints yet.")

    form = page.locator("#register-endpoint")
    form.get_by_label("URL").fill(hook)
    form.get_by_label("Versions").fill("browser-wf@1\nbrowser-wf@2")
    form.get_by_label("Concurrency").fill("3")
    form.get_by_role("button", name="Register endpoint").click()
    secret = page.locator("#endpoint-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    snippet = page.locator("#mount-snippet").inner_text()
    assert "from aiki import client, endpoint" in snippet
    assert f'client=client(url="{srv.base}"' in snippet
    assert 'secret=os.environ["AIKI_ENDPOINT_SECRET"]' in snippet
    assert secret not in snippet
    row = page.locator("#endpoints tr[data-endpoint-id]")
    expect(row).to_have_count(1)
    endpoint_id = row.get_attribute("data-endpoint-id")
    page.screenshot(path=str(shots / "30-endpoint-registered-secret-once.png"), full_page=True)

    # Shown once: the page as it is now has its hint only.
    page.reload()
    expect(page.locator("#endpoint-secret")).to_have_count(0)
    assert secret not in page.content()
    row = page.locator(f'tr[data-endpoint-id="{endpoint_id}"]')
    expect(row).to_contain_text(secret[:12])
    expect(row).to_contain_text("browser-wf@2")
    expect(row).to_have_attribute("data-breaker", "closed")

    row.get_by_role("button", name="Disable").click()
    expect(page.locator(f'tr[data-endpoint-id="{endpoint_id}"]')).to_have_attribute("data-enabled", "no")
    page.locator(f'tr[data-endpoint-id="{endpoint_id}"]').get_by_role("button", name="Enable").click()
    expect(page.locator(f'tr[data-endpoint-id="{endpoint_id}"]')).to_have_attribute("data-enabled", "yes")
    page.screenshot(path=str(shots / "31-endpoints-list.png"), full_page=True)

    page.locator(f'tr[data-endpoint-id="{endpoint_id}"] a.endpoint-link').click()
    expect(page.locator("#endpoint-detail")).to_have_attribute("data-endpoint-id", endpoint_id or "")
    expect(page.locator("#endpoint-deliveries")).to_contain_text("Nothing delivered yet")
    page.locator("#endpoint-actions summary", has_text="Rotate secret").click()
    page.get_by_role("button", name="Rotate secret").click()
    rotated = page.locator("#new-secret #endpoint-secret").inner_text().strip()
    assert rotated.startswith("whsec_")
    assert rotated != secret
    expect(page.locator("#new-secret")).to_contain_text("previous secret stays valid until")
    page.screenshot(path=str(shots / "32-endpoint-secret-rotated.png"), full_page=True)
    page.goto(f"{srv.base}/ui/ns/{owner.namespace_id}/endpoints/{endpoint_id}")
    expect(page.locator("#new-secret")).to_have_count(0)
    assert rotated not in page.content()

    page.locator("#endpoint-actions summary", has_text="Delete").click()
    page.get_by_role("button", name="Yes, delete this endpoint").click()
    expect(page.locator(".empty-title")).to_have_text("No endpoints yet.")

    with api(srv.base, owner.key("read")) as client:
        assert client.get("/api/v1/endpoints").json() == {"items": []}
    page.get_by_role("link", name="Audit log").click()
    for action in ("endpoint.create", "endpoint.disable", "endpoint.enable", "endpoint.rotate_secret"):
        expect(page.locator("#audit")).to_contain_text(action)
    expect(page.locator("#audit")).to_contain_text("endpoint.delete")
    assert secret not in page.content()
    assert rotated not in page.content()


def _insert_attempts(db_url: str, namespace_id: str, endpoint_id: str, run_id: str) -> None:
    async def insert() -> None:
        db = Database(db_url, migrate=False)
        try:
            async with db.engine.begin() as conn:
                for attempt, outcome, status, latency, error in (
                    (1, "http_error", 503, 48, "HTTP 503 from the endpoint"),
                    (2, "connection_error", None, 3, "connection refused"),
                    (3, "completed", 200, 21, None),
                ):
                    await conn.execute(
                        sa.insert(endpoint_deliveries).values(
                            namespace_id=namespace_id,
                            endpoint_id=endpoint_id,
                            run_id=run_id,
                            revision=attempt,
                            attempt=attempt,
                            outcome=outcome,
                            status_code=status,
                            latency_ms=latency,
                            error=error,
                            created_at=now_ms() + attempt,
                        )
                    )
        finally:
            await db.dispose()

    in_thread(insert())


def test_a_viewer_sees_endpoints_without_controls_and_a_run_shows_its_deliveries(page: Any, srv: Server) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir()
    owner = _signup(srv.base, "readers")
    with api(srv.base, owner.key("admin")) as client:
        made = client.post(
            "/api/v1/endpoints",
            json={"url": f"http://127.0.0.1:{free_port()}/hook", "versions": [["viewed-wf", "1"]], "enabled": False},
        )
        assert made.status_code == 201, made.text
        endpoint_id = made.json()["endpoint"]["id"]
        started = client.post("/api/v1/runs", json={"workflow": "viewed-wf", "version": "1", "input": 7})
        assert started.status_code == 201, started.text
        run_id = started.json()["run"]["id"]
    _insert_attempts(srv.db_url, owner.namespace_id, endpoint_id, run_id)
    viewer_email = _viewer_of(srv.base, owner)

    _login(page, srv.base, viewer_email)
    page.goto(f"{srv.base}/ui/ns/{owner.namespace_id}/endpoints")
    row = page.locator(f'tr[data-endpoint-id="{endpoint_id}"]')
    expect(row).to_have_attribute("data-enabled", "no")
    expect(row).to_contain_text("2 of 3 failed")
    expect(page.locator("#register-endpoint")).to_have_count(0)
    expect(page.locator("[data-action]")).to_have_count(0)
    page.screenshot(path=str(shots / "33-endpoints-viewer.png"), full_page=True)
    row.locator("a.endpoint-link").click()
    expect(page.locator("#endpoint-detail")).to_be_visible()
    expect(page.locator("#endpoint-actions")).to_have_count(0)
    expect(page.locator("#endpoint-deliveries tr.delivery")).to_have_count(3)

    page.goto(f"{srv.base}/ui/ns/{owner.namespace_id}/runs/{run_id}")
    deliveries = page.locator("#deliveries tr.delivery")
    expect(deliveries).to_have_count(3)
    first = page.locator('#deliveries tr.delivery[data-attempt="1"]')
    expect(first).to_contain_text("http_error")
    expect(first).to_contain_text("503")
    expect(first).to_contain_text("48 ms")
    expect(first).to_contain_text("HTTP 503 from the endpoint")
    expect(page.locator('#deliveries tr.delivery[data-attempt="2"]')).to_contain_text("connection refused")
    expect(page.locator('#deliveries tr.delivery[data-attempt="3"]')).to_contain_text("completed")
    page.screenshot(path=str(shots / "34-run-deliveries.png"), full_page=True)

    # A forged change, with the viewer's own token and origin, is refused by role.
    token = page.locator('input[name="_csrf"]').first.get_attribute("value")
    assert token
    forged = page.request.post(
        f"{srv.base}/ui/ns/{owner.namespace_id}/endpoints/{endpoint_id}/delete",
        form={"_csrf": token},
        headers={"origin": srv.base},
        max_redirects=0,
    )
    assert forged.status == 403
    with api(srv.base, owner.key("read")) as client:
        assert client.get(f"/api/v1/endpoints/{endpoint_id}").status_code == 200


def test_a_refused_url_reads_as_a_message_in_the_form(chromium: Any, srv: Server) -> None:
    """htmx swaps the form's 422 answer in place: the reason beside the form, what was typed kept.
    (Its own browser context: a 4xx answer is a console error there, which the ``page`` fixture
    would count against the pages.)"""
    from playwright.sync_api import expect

    owner = _signup(srv.base, "mistaken")
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        _login(page, srv.base, owner.email)
        page.goto(f"{srv.base}/ui/ns/{owner.namespace_id}/endpoints")
        form = page.locator("#register-endpoint")
        form.get_by_label("URL").fill("ftp://files.example/aiki")
        form.get_by_label("Versions").fill("mistaken-wf@1")
        form.get_by_role("button", name="Register endpoint").click()
        alert = page.locator("#register-endpoint [role=alert]")
        expect(alert).to_contain_text("only http and https URLs are allowed")
        expect(page.locator("#register-endpoint").get_by_label("URL")).to_have_value("ftp://files.example/aiki")
        expect(page.locator("#endpoint-secret")).to_have_count(0)
        assert "{" not in alert.inner_text()  # a sentence, not a JSON problem
        page.screenshot(path=str(screenshot_dir() / "35-endpoint-form-error.png"), full_page=True)
    finally:
        context.close()
    with api(srv.base, owner.key("read")) as client:
        assert client.get("/api/v1/endpoints").json() == {"items": []}
