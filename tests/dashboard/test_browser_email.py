"""Issue 11 (High), in Chromium against a real `aiki server` process that mails through a real SMTP
server process: sign up in the browser, see "check your email" and no way in; read the mail from
the SMTP server's maildir, open its link, confirm, and land in the dashboard able to act (create a
namespace). Logging in before that shows only "verify your email". The SMTP password never
reaches the server's log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.browser import PASSWORD, Procs, screenshot_dir, start_server
from tests.mail_support import SMTP_PASSWORD, body, smtp_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(180)]


def test_sign_up_read_the_mail_open_the_link_and_act(page: Any, pg_url: str, procs: Procs, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir()
    with smtp_server(tmp_path) as smtp:
        base = start_server(
            procs,
            pg_url,
            env={
                "AIKI_EMAIL_VERIFICATION": "on",
                "AIKI_SMTP_URL": smtp.url,
                "AIKI_EMAIL_FROM": "aiki@mail.example",
            },
        )

        page.goto(f"{base}/ui/signup")
        page.get_by_label("Email").fill("newcomer@team.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Organization").fill("Mailed Team")
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        page.screenshot(path=str(shots / "email-01-check-your-email.png"), full_page=True)

        # Before verifying, logging in shows only "verify your email"; other pages send back there.
        page.goto(f"{base}/ui/login")
        page.get_by_label("Email").fill("newcomer@team.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()
        page.goto(f"{base}/ui/namespaces")
        expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()
        page.get_by_role("button", name="Send me a new link").click()
        expect(page.get_by_text("A new link is on its way")).to_be_visible()
        page.screenshot(path=str(shots / "email-02-verify-your-email.png"), full_page=True)

        # The newest mail's link (the resend made the sign-up's stale).
        first = smtp.wait_for("newcomer@team.example", "Confirm your email address for Aiki")
        newest = smtp.wait_for("newcomer@team.example", "Confirm your email address for Aiki", after=1)
        stale = re.search(r"https?://\S+/ui/verify-email\?token=\S+", body(first))
        link = re.search(r"https?://\S+/ui/verify-email\?token=\S+", body(newest))
        assert stale, body(first)
        assert link, body(newest)
        assert link.group(0).startswith(f"{base}/ui/verify-email?token=")

        # The stale link's button is refused (checked over plain HTTP: a 400 page is a console error in Chromium).
        stale_token = stale.group(0).rpartition("token=")[2]
        with httpx.Client(base_url=base.replace("localhost", "127.0.0.1"), timeout=10) as http:
            refused = http.post("/ui/verify-email", data={"token": stale_token}, headers={"origin": base})
        assert refused.status_code == 400, refused.text
        assert "not valid" in refused.text

        page.goto(link.group(0))
        page.screenshot(path=str(shots / "email-03-confirm.png"), full_page=True)
        page.get_by_role("button", name="Confirm my email address").click()
        expect(page.get_by_text("No runs yet.")).to_be_visible()

        # Able to act: create a namespace; the dashboard switches to it.
        page.get_by_role("link", name="Namespaces", exact=True).click()
        page.get_by_label("New namespace").fill("from-mail")
        page.get_by_role("button", name="Create namespace").click()
        expect(page.locator("#ns-switcher summary")).to_contain_text("from-mail")
        page.screenshot(path=str(shots / "email-04-in-the-dashboard.png"), full_page=True)
        page.goto("about:blank")  # stop the runs page's polling before the server stops

    assert SMTP_PASSWORD not in procs.output()
