"""Dashboard pages of the mailed links (plain HTTP; Chromium does the whole path in
test_browser_email.py): a link opens a button and is used only by its POST, an unverified person
sees only "verify your email", and forgotten passwords are reset from the pages."""

from __future__ import annotations

from aiki.iam import verification
from tests.dashboard.support import ORIGIN, UI, csrf_of, signup
from tests.iam_support import API, PASSWORD, IamHarness

NEW_PASSWORD = "a different passphrase 31"


async def test_opening_a_link_uses_nothing_until_its_button_is_pressed(iam_aiki: IamHarness) -> None:
    http = iam_aiki.new_http()
    resp = await http.post(f"{UI}/signup", data={"email": "scan@pages.example", "password": PASSWORD}, headers=ORIGIN)
    assert (resp.status_code, resp.headers["location"]) == (303, f"{UI}/verify-email")
    landing = await http.get(f"{UI}/verify-email")
    assert "Check your email" in landing.text
    assert "aiki_session" not in resp.headers.get("set-cookie", "")
    token = iam_aiki.last_token("scan@pages.example", f"{UI}/verify-email")
    # A mail scanner fetching the link twice consumes nothing.
    for _ in range(2):
        page = await iam_aiki.new_http().get(f"{UI}/verify-email", params={"token": token})
        assert page.status_code == 200
        assert "Confirm my email address" in page.text
    done = await http.post(f"{UI}/verify-email", data={"token": token}, headers=ORIGIN)
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith(f"{UI}/ns/")
    assert (await http.get(done.headers["location"])).status_code == 200
    # Used: the button now says so (400), on a page, not a 500.
    again = await iam_aiki.new_http().post(f"{UI}/verify-email", data={"token": token}, headers=ORIGIN)
    assert again.status_code == 400
    assert "not valid" in again.text


async def test_an_unverified_person_sees_only_verify_your_email(iam_aiki: IamHarness) -> None:
    owner = await signup(iam_aiki, "owner@pages.example")
    http = iam_aiki.new_http()
    await http.post(f"{UI}/signup", data={"email": "pending@pages.example", "password": PASSWORD}, headers=ORIGIN)
    resp = await http.post(f"{UI}/login", data={"email": "pending@pages.example", "password": PASSWORD}, headers=ORIGIN)
    assert resp.status_code == 303
    for path in (f"{UI}/home", f"{UI}/namespaces", f"{UI}/ns/{owner.namespace_id}/runs"):
        page = await http.get(path)
        assert (page.status_code, page.headers.get("location")) == (303, f"{UI}/verify-email"), path
    htmx = await http.get(f"{UI}/namespaces", headers={"hx-request": "true"})
    assert htmx.headers.get("hx-redirect") == f"{UI}/verify-email"
    page = await http.get(f"{UI}/verify-email")
    assert "Verify your email" in page.text
    assert "pending@pages.example" in page.text
    before = len(iam_aiki.outbox.to("pending@pages.example"))
    resent = await http.post(f"{UI}/verify-email/resend", data={"_csrf": csrf_of(page.text)}, headers=ORIGIN)
    assert (resent.status_code, resent.headers["location"]) == (303, f"{UI}/verify-email?sent=1")
    assert len(iam_aiki.outbox.to("pending@pages.example")) == before + 1
    # Without the session's CSRF token the resend is refused.
    forged = await http.post(f"{UI}/verify-email/resend", data={"_csrf": "0" * 64}, headers=ORIGIN)
    assert forged.status_code == 403
    out = await http.post(f"{UI}/logout", data={"_csrf": csrf_of(page.text)}, headers=ORIGIN)
    assert out.status_code == 303
    assert (await http.get(f"{API}/auth/me")).status_code == 401


async def test_forgot_and_reset_password_from_the_pages(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "forgetful@pages.example")
    anon = iam_aiki.new_http()
    form = await anon.get(f"{UI}/forgot-password")
    assert form.status_code == 200
    known = await anon.post(f"{UI}/forgot-password", data={"email": "forgetful@pages.example"}, headers=ORIGIN)
    unknown = await anon.post(f"{UI}/forgot-password", data={"email": "nobody@pages.example"}, headers=ORIGIN)
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("forgetful", "X") == unknown.text.replace("nobody", "X")
    await verification.mail_settled()
    token = iam_aiki.last_token("forgetful@pages.example", f"{UI}/reset-password")
    page = await anon.get(f"{UI}/reset-password", params={"token": token})
    assert "Choose a new password" in page.text
    weak = await anon.post(f"{UI}/reset-password", data={"token": token, "password": "short"}, headers=ORIGIN)
    assert weak.status_code == 400
    done = await anon.post(f"{UI}/reset-password", data={"token": token, "password": NEW_PASSWORD}, headers=ORIGIN)
    assert done.status_code == 200, done.text
    assert "Your password is changed" in done.text
    assert (await person.http.get(f"{API}/auth/me")).status_code == 401  # sessions ended
    await iam_aiki.login("forgetful@pages.example", NEW_PASSWORD)
    login_page = await anon.get(f"{UI}/login")
    assert f"{UI}/forgot-password" in login_page.text
