"""Acceptance 1, in Chromium against a real `aiki server` process on PostgreSQL: sign up a team,
create a namespace and a `worker` key (read from the page), start a real `aiki worker` process with
it, start runs through the API, see them in the runs list, open one (timeline and tasks), cancel a
live one in the browser: it shows `cancelled` and the worker stops executing it."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.browser import PASSWORD, Procs, api, clean_env, screenshot_dir, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]

WORKFLOWS = textwrap.dedent(
    """
    import asyncio
    import os

    from aiki import Run, task, workflow

    LEDGER = os.environ["DASH_LEDGER"]


    @task(name="add-one")
    async def add_one(n: int) -> int:
        return n + 1


    @task(name="tick")
    async def tick(i: int) -> int:
        with open(LEDGER, "a") as f:
            f.write(f"tick {i}\\n")
        await asyncio.sleep(0.15)
        return i


    quick = workflow(name="quick")
    ticker = workflow(name="ticker")


    @quick.v("1")
    async def quick_v1(run: Run, n: int) -> int:
        first = await add_one.start(run, n)
        return await add_one.start(run, first)


    @ticker.v("1")
    async def ticker_v1(run: Run, n: int) -> int:
        for i in range(n):
            await tick.start(run, i)
        return n


    ALL = [quick_v1, ticker_v1]
    """
)


def _ticks(ledger: Path) -> int:
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def test_sign_up_key_worker_runs_and_cancel_in_the_browser(
    page: Any, pg_url: str, procs: Procs, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir()
    (tmp_path / "dash_workflows.py").write_text(WORKFLOWS)
    ledger = tmp_path / "ticks.txt"
    base = start_server(procs, pg_url)

    # Sign up a team.
    page.goto(f"{base}/ui/signup")
    page.get_by_label("Email").fill("owner@team.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Organization").fill("Team")
    page.screenshot(path=str(shots / "01-signup.png"), full_page=True)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("No runs yet.")).to_be_visible()

    # Create a namespace; the dashboard switches to it.
    page.get_by_role("link", name="Namespaces", exact=True).click()
    page.screenshot(path=str(shots / "02-namespaces.png"), full_page=True)
    page.get_by_label("New namespace").fill("production")
    page.get_by_role("button", name="Create namespace").click()
    expect(page.locator("#ns-switcher summary")).to_contain_text("production")
    page.screenshot(path=str(shots / "02-empty-runs-new-namespace.png"), full_page=True)
    ns_id = re.search(r"/ui/ns/([^/]+)/runs", page.url)
    assert ns_id, page.url

    # Create a worker key and read it from the page (shown once).
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("worker one")
    page.get_by_label("Role").select_option("worker")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-value")
    expect(secret).to_be_visible()
    key = secret.inner_text().strip()
    assert key.startswith("aiki_")
    expect(page.locator("#keys")).to_contain_text("worker one")
    page.screenshot(path=str(shots / "03-api-key-created.png"), full_page=True)
    page.reload()
    expect(page.locator("#new-key-value")).to_have_count(0)  # never shown again

    # A real worker process with that key.
    procs.start(
        "worker",
        ["worker", "dash_workflows:ALL", "--url", base, "--api-key", key],
        clean_env(tmp_path, DASH_LEDGER=str(ledger)),
    )
    # The runs page is open before any run exists: it refreshes by itself, no reload needed.
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.get_by_text("No runs yet.")).to_be_visible()
    with api(base, key) as http:

        def start(workflow: str, n: int) -> str | None:
            resp = http.post("/api/v1/runs", json={"workflow": workflow, "version": "1", "input": n})
            assert resp.status_code in (201, 404), resp.text  # 404 until the worker registered
            return str(resp.json()["run"]["id"]) if resp.status_code == 201 else None

        quick_ids = [procs.wait("a quick run to start", lambda n=n: start("quick", n)) for n in range(3)]
        live_id = procs.wait("the ticker run to start", lambda: start("ticker", 10_000))

        for run_id in [*quick_ids, live_id]:
            expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
        expect(page.locator(f'tr[data-run-id="{quick_ids[0]}"] .badge')).to_have_text("completed")
        page.screenshot(path=str(shots / "04-runs-list.png"), full_page=True)

        # Open a finished run: its timeline and tasks.
        page.locator(f'tr[data-run-id="{quick_ids[0]}"] a').click()
        expect(page.locator("#run-status")).to_have_text("completed")
        expect(page.locator("#timeline")).to_contain_text("Attempt 1")
        expect(page.locator("#timeline")).to_contain_text("running")
        expect(page.locator("#tasks tr.task")).to_have_count(2)
        expect(page.locator("#tasks")).to_contain_text("add-one")
        expect(page.locator("#run-output")).to_have_text("2")
        expect(page.locator("[data-action]")).to_have_count(0)  # nothing to do on a completed run
        page.screenshot(path=str(shots / "05-run-detail.png"), full_page=True)

        # Cancel the live run in the browser.
        page.goto(f"{base}/ui/ns/{ns_id.group(1)}/runs/{live_id}")
        expect(page.locator("#tasks tr.task").first).to_be_visible()
        procs.wait("the worker to execute ticks", lambda: _ticks(ledger) >= 2)
        page.screenshot(path=str(shots / "06-live-run.png"), full_page=True)
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator('button[data-action="cancel"]').click()
        expect(page.locator("#run-status")).to_have_text("cancelled")
        expect(page.locator("[data-action]")).to_have_count(0)
        page.screenshot(path=str(shots / "07-run-cancelled.png"), full_page=True)
        assert http.get(f"/api/v1/runs/{live_id}").json()["status"] == "cancelled"

        # The worker stops executing it: at most the tick in flight at the cancel ends, then none.
        at_cancel = _ticks(ledger)
        after = procs.wait("another run to complete", lambda: start("quick", 99))
        procs.wait(
            "the run after the cancel", lambda: http.get(f"/api/v1/runs/{after}").json()["status"] == "completed"
        )
        window_end = time.monotonic() + 2.0  # ticks come every ~0.15 s while a run executes
        while time.monotonic() < window_end:
            assert _ticks(ledger) <= at_cancel + 1, "the worker kept executing the cancelled run"
            time.sleep(0.1)

        # The workers page lists the connected worker.
        page.get_by_role("link", name="Workers").click()
        expect(page.locator("#workers")).to_contain_text("ticker 1")
        page.screenshot(path=str(shots / "08-workers.png"), full_page=True)
