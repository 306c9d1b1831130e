"""The mail path against a real SMTP server process on loopback (``tests/smtp_server.py``, aiosmtpd,
with AUTH): the in-process app sends through ``SmtpMailer`` as ``aiki server`` does; links read
from the delivered messages work. ``tests/dashboard/test_browser_email.py`` does it with a real
``aiki server`` process and Chromium."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aiki.iam import verification
from aiki.iam.mail import SmtpMailer, SmtpSettings
from tests.iam_support import API, PASSWORD, TEST_SECRET, IamHarness
from tests.mail_support import SMTP_PASSWORD, SmtpServer, body, link_token, smtp_server

SENDER = "Aiki <aiki@mail.example>"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path_factory.mktemp("smtp")) as server:
        yield server


@pytest.fixture
async def h(db_url: str, smtp: SmtpServer) -> AsyncIterator[IamHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, smtp_url=smtp.url, email_from=SENDER).start()
    harness.iam.mailer = SmtpMailer(SmtpSettings.parse(smtp.url), SENDER)  # the real mailer, not the outbox
    try:
        yield harness
    finally:
        await harness.close()


def _address(db_url: str, local: str) -> str:
    # Both databases' runs share the module's SMTP server: keep their addresses apart.
    return f"{local}-{'pg' if db_url.startswith('postgresql') else 'lite'}@example.com"


async def test_signup_notice_invitation_and_reset_mail_arrive_with_working_links(
    h: IamHarness, smtp: SmtpServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner_address = _address(db_url, "owner")
    http = h.session_http()
    resp = await http.post(f"{API}/auth/signup", json={"email": owner_address, "password": PASSWORD})
    assert resp.status_code == 202, resp.text

    # Sign-up: a verification mail whose link verifies and signs in.
    mail = smtp.wait_for(owner_address, "Confirm your email address for Aiki")
    assert mail["From"] == SENDER
    token = link_token(body(mail), "http://aiki/ui/verify-email")
    done = await http.post(f"{API}/auth/verify-email", json={"token": token})
    assert done.status_code == 200, done.text
    org_id = done.json()["organization"]["id"]
    assert (await http.get(f"{API}/organizations/{org_id}/members")).status_code == 200

    # The same address again: its owner gets a notice.
    count = len(smtp.messages())
    again = await h.session_http().post(f"{API}/auth/signup", json={"email": owner_address, "password": PASSWORD})
    assert again.status_code == 202
    notice = smtp.wait_for(owner_address, "Someone tried to sign up with your address", after=count)
    assert "/ui/forgot-password" in body(notice)

    # An invitation is mailed to the invitee, with the link the API answered.
    invitee = _address(db_url, "invitee")
    created = await http.post(f"{API}/organizations/{org_id}/invitations", json={"email": invitee})
    assert created.status_code == 201, created.text
    invitation = smtp.wait_for(invitee, "You are invited to " + done.json()["organization"]["name"] + " on Aiki")
    assert created.json()["url"] in body(invitation)

    # Password reset: the mailed link sets a new password.
    count = len(smtp.messages())
    forgot = await h.session_http().post(f"{API}/auth/password/forgot", json={"email": owner_address})
    assert forgot.status_code == 202
    await verification.mail_settled()
    reset_mail = smtp.wait_for(owner_address, "Reset your Aiki password", after=count)
    reset_token = link_token(body(reset_mail), "http://aiki/ui/reset-password")
    new_password = "a brand new passphrase 77"
    reset = await h.session_http().post(
        f"{API}/auth/password/reset", json={"token": reset_token, "password": new_password}
    )
    assert reset.status_code == 204, reset.text
    assert (await http.get(f"{API}/auth/me")).status_code == 401  # every session ended
    await h.login(owner_address, new_password)

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SMTP_PASSWORD not in logged


async def test_a_refused_smtp_login_changes_no_answer_and_logs_no_credentials(
    h: IamHarness, smtp: SmtpServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = smtp.url.replace(SMTP_PASSWORD, "not-the-password-5150")
    h.iam.mailer = SmtpMailer(SmtpSettings.parse(wrong), SENDER)
    caplog.set_level(logging.DEBUG)
    address = _address(db_url, "unlucky")
    resp = await h.session_http().post(f"{API}/auth/signup", json={"email": address, "password": PASSWORD})
    assert resp.status_code == 202, resp.text
    failures = [r for r in caplog.records if r.name == "aiki.mail"]
    assert failures, "a mail that could not go out must be logged"
    assert "SMTPAuthenticationError" in failures[0].getMessage()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not-the-password-5150" not in logged
    assert "token=" not in logged  # nor the link the mail carried


def test_smtp_settings_parse_and_hide_the_password() -> None:
    s = SmtpSettings.parse("smtp://user%40corp:p%40ss@mail.example?starttls=on&timeout=5")
    assert (s.host, s.port, s.tls, s.starttls, s.username, s.password, s.timeout_s) == (
        "mail.example",
        587,
        False,
        True,
        "user@corp",
        "p@ss",
        5.0,
    )
    assert "p@ss" not in repr(s)
    assert s.display == "smtp://mail.example:587"
    assert SmtpSettings.parse("smtps://mail.example").port == 465
    assert SmtpSettings.parse("smtp://mail.example").port == 25


@pytest.mark.parametrize(
    "url",
    ["http://mail.example", "smtp://", "smtps://x@mail.example?starttls=on", "smtp://mail.example?tls=1", "smtp://h:x"],
)
def test_malformed_smtp_urls_name_the_variable(url: str, tmp_path: Path) -> None:
    from aiki.iam.config import IamConfig, IamConfigError

    with pytest.raises(IamConfigError, match="AIKI_SMTP_URL"):
        IamConfig(secret_key=TEST_SECRET, base_url="http://aiki", smtp_url=url, email_from="a@b.example")
