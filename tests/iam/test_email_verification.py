"""Email verification, password reset and mailed invitations, in process on both databases (issue 11).

Mail goes to the harness's in-memory outbox; ``tests/iam/test_mail_smtp.py`` runs the same paths
through a real SMTP server process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from aiki.iam import verification
from aiki.iam.tables import email_tokens, organization_members, users
from tests.api.test_http_basics import assert_problem
from tests.iam_support import API, PASSWORD, IamHarness, rows

OTHER_PASSWORD = "another long passphrase 42"


async def sign_up_only(h: IamHarness, email: str, password: str = PASSWORD) -> httpx.Response:
    return await h.session_http().post(f"{API}/auth/signup", json={"email": email, "password": password})


async def test_signup_mails_a_link_and_an_unverified_account_sees_only_verify_your_email(
    iam_aiki: IamHarness,
) -> None:
    resp = await sign_up_only(iam_aiki, "Ann@Example.com")
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "check_your_email"
    assert "set-cookie" not in resp.headers
    (mail,) = iam_aiki.outbox.to("ann@example.com")
    assert mail.subject == "Confirm your email address for Aiki"
    assert "http://aiki/ui/verify-email?token=" in mail.text
    # The token is stored only as an HMAC.
    token = iam_aiki.last_token("ann@example.com", "/ui/verify-email")
    stored = await rows(iam_aiki, sa.select(email_tokens))
    assert [r["purpose"] for r in stored] == ["verify"]
    assert token not in str(stored)

    # The unverified account can log in, but sees only "verify your email".
    http = await iam_aiki.login("ann@example.com")
    me = await http.get(f"{API}/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["email_verified"] is False
    (org,) = me.json()["organizations"]
    assert_problem(await http.get(f"{API}/organizations"), 403, "email_unverified")
    assert_problem(await http.get(f"{API}/organizations/{org['id']}/members"), 403, "email_unverified")
    assert_problem(await http.get(f"{API}/runs", headers={"x-aiki-namespace": "x"}), 403, "email_unverified")
    assert_problem(await http.post(f"{API}/organizations", json={"name": "Other"}), 403, "email_unverified")

    # Resend: a new link, the old one stops working.
    resent = await http.post(f"{API}/auth/verify-email/resend")
    assert resent.status_code == 202, resent.text
    new_token = iam_aiki.last_token("ann@example.com", "/ui/verify-email")
    assert new_token != token
    stale = await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": token})
    assert_problem(stale, 400, "link_invalid")

    # Following the link verifies and signs in; the earlier session now reaches everything too.
    browser = iam_aiki.session_http()
    done = await browser.post(f"{API}/auth/verify-email", json={"token": new_token})
    assert done.status_code == 200, done.text
    assert done.json()["user"]["email_verified"] is True
    assert done.json()["namespace"]["role"] == "admin"
    assert (await browser.get(f"{API}/organizations")).status_code == 200
    assert (await http.get(f"{API}/organizations")).status_code == 200
    # Used once.
    again = await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": new_token})
    assert_problem(again, 400, "link_invalid")
    # Verified: resend sends nothing.
    before = len(iam_aiki.outbox.sent)
    assert (await http.post(f"{API}/auth/verify-email/resend")).json()["status"] == "already_verified"
    assert len(iam_aiki.outbox.sent) == before
    # Logout works for anyone; after it, the session is gone.
    assert (await http.post(f"{API}/auth/logout")).status_code == 204


async def test_a_verification_link_expires(iam_aiki: IamHarness) -> None:
    assert (await sign_up_only(iam_aiki, "late@example.com")).status_code == 202
    token = iam_aiki.last_token("late@example.com", "/ui/verify-email")
    iam_aiki.advance(verification.VERIFY_TTL_S * 1000 + 1)
    resp = await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": token})
    assert_problem(resp, 400, "link_invalid")
    assert "expired" in resp.json()["detail"]
    for bad in ("", "x" * 5000, "not-a-token"):
        refused = await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": bad})
        assert_problem(refused, 400, "link_invalid")


async def test_signup_answers_the_same_for_a_taken_address_and_mails_its_owner_a_notice(
    iam_aiki: IamHarness,
) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    fresh = await sign_up_only(iam_aiki, "nobody@example.com", OTHER_PASSWORD)
    taken = await sign_up_only(iam_aiki, "OWNER@example.com", OTHER_PASSWORD)
    assert (taken.status_code, taken.json(), "set-cookie" in taken.headers) == (
        fresh.status_code,
        fresh.json(),
        "set-cookie" in fresh.headers,
    )
    notice = iam_aiki.outbox.to("owner@example.com")[-1]
    assert notice.subject == "Someone tried to sign up with your address"
    assert "token=" not in notice.text  # a notice carries no link that changes anything
    assert "/ui/forgot-password" in notice.text
    # Nothing changed: the owner's password still works, the intruder's does not.
    await iam_aiki.login("owner@example.com")
    wrong = await iam_aiki.session_http().post(
        f"{API}/auth/login", json={"email": "owner@example.com", "password": OTHER_PASSWORD}
    )
    assert wrong.status_code == 401
    assert (await owner.http.get(f"{API}/organizations")).status_code == 200


async def test_a_repeated_signup_of_an_unverified_address_is_verified_only_by_its_own_link(
    iam_aiki: IamHarness,
) -> None:
    """The squatter signs up first with the victim's address; the victim signs up too and follows the
    newest link: the victim's password is set, the squatter's link and sessions are dead."""
    assert (await sign_up_only(iam_aiki, "victim@example.com", OTHER_PASSWORD)).status_code == 202
    squatters_link = iam_aiki.last_token("victim@example.com", "/ui/verify-email")
    squatter = await iam_aiki.login("victim@example.com", OTHER_PASSWORD)

    assert (await sign_up_only(iam_aiki, "victim@example.com", PASSWORD)).status_code == 202
    victims_link = iam_aiki.last_token("victim@example.com", "/ui/verify-email")
    assert "signed up more than once" in iam_aiki.outbox.to("victim@example.com")[-1].text
    assert len(await rows(iam_aiki, sa.select(users).where(users.c.email == "victim@example.com"))) == 1
    # Until the link is followed, nothing changed: the squatter's password still logs in (to "verify").
    assert_problem(
        await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": squatters_link}),
        400,
        "link_invalid",
    )
    done = await iam_aiki.session_http().post(f"{API}/auth/verify-email", json={"token": victims_link})
    assert done.status_code == 200, done.text
    assert (await squatter.get(f"{API}/auth/me")).status_code == 401  # the squatter's session ended
    refused = await iam_aiki.session_http().post(
        f"{API}/auth/login", json={"email": "victim@example.com", "password": OTHER_PASSWORD}
    )
    assert refused.status_code == 401
    await iam_aiki.login("victim@example.com", PASSWORD)


async def test_password_reset_answers_the_same_and_the_link_sets_the_password_and_ends_sessions(
    iam_aiki: IamHarness,
) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    other_session = await iam_aiki.login("alice@example.com")
    anon = iam_aiki.session_http()
    known = await anon.post(f"{API}/auth/password/forgot", json={"email": "Alice@example.com"})
    unknown = await anon.post(f"{API}/auth/password/forgot", json={"email": "ghost@example.com"})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known.status_code == 202
    await verification.mail_settled()
    assert iam_aiki.outbox.to("ghost@example.com") == []
    mail = iam_aiki.outbox.to("alice@example.com")[-1]
    assert mail.subject == "Reset your Aiki password"
    token = iam_aiki.last_token("alice@example.com", "/ui/reset-password")

    # A refused password does not use the link up.
    weak = await anon.post(f"{API}/auth/password/reset", json={"token": token, "password": "short"})
    assert_problem(weak, 422, "validation_error")
    done = await anon.post(f"{API}/auth/password/reset", json={"token": token, "password": OTHER_PASSWORD})
    assert done.status_code == 204, done.text
    # Every session ended; the old password is gone, the new one works.
    assert (await alice.http.get(f"{API}/auth/me")).status_code == 401
    assert (await other_session.get(f"{API}/auth/me")).status_code == 401
    old = await anon.post(f"{API}/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert old.status_code == 401
    await iam_aiki.login("alice@example.com", OTHER_PASSWORD)
    again = await anon.post(f"{API}/auth/password/reset", json={"token": token, "password": OTHER_PASSWORD})
    assert_problem(again, 400, "link_invalid")


async def test_a_password_reset_verifies_the_address(iam_aiki: IamHarness) -> None:
    assert (await sign_up_only(iam_aiki, "bo@example.com")).status_code == 202
    await iam_aiki.session_http().post(f"{API}/auth/password/forgot", json={"email": "bo@example.com"})
    await verification.mail_settled()
    token = iam_aiki.last_token("bo@example.com", "/ui/reset-password")
    resp = await iam_aiki.session_http().post(f"{API}/auth/password/reset", json={"token": token, "password": PASSWORD})
    assert resp.status_code == 204, resp.text
    http = await iam_aiki.login("bo@example.com")
    assert (await http.get(f"{API}/organizations")).status_code == 200
    # The sign-up's verification link died with the reset: the account is settled.
    assert await rows(iam_aiki, sa.select(email_tokens)) == []


async def test_a_reset_link_expires(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("cy@example.com")
    await iam_aiki.session_http().post(f"{API}/auth/password/forgot", json={"email": "cy@example.com"})
    await verification.mail_settled()
    token = iam_aiki.last_token("cy@example.com", "/ui/reset-password")
    iam_aiki.advance(verification.RESET_TTL_S * 1000 + 1)
    resp = await iam_aiki.session_http().post(f"{API}/auth/password/reset", json={"token": token, "password": PASSWORD})
    assert_problem(resp, 400, "link_invalid")


@pytest.fixture
async def unverified_off(db_url: str) -> AsyncIterator[IamHarness]:
    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, email_verification=False).start()
    try:
        yield harness
    finally:
        await harness.close()


async def test_with_verification_off_signup_signs_in_at_once(unverified_off: IamHarness) -> None:
    http = unverified_off.session_http()
    resp = await http.post(f"{API}/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    assert resp.json()["user"]["email_verified"] is False  # nobody proved it: OIDC will not link to it
    assert unverified_off.outbox.sent == []
    assert (await http.get(f"{API}/organizations")).status_code == 200
    # Invitations need only a matching address then.
    owner = await unverified_off.signup("owner@example.com")
    await unverified_off.invite_and_join(owner, "member@example.com")


async def test_invitations_are_mailed_and_accepted_only_by_the_verified_matching_address(
    iam_aiki: IamHarness,
) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    resp = await owner.http.post(f"{API}/organizations/{owner.org_id}/invitations", json={"email": "Inv@example.com"})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    (mail,) = iam_aiki.outbox.to("inv@example.com")
    assert created["url"] in mail.text
    assert "owner@example.com" in mail.text
    # An unverified account with the invited address cannot accept (it may be a squatter's).
    assert (await sign_up_only(iam_aiki, "inv@example.com")).status_code == 202
    unverified = await iam_aiki.login("inv@example.com")
    early = await unverified.post(f"{API}/invitations/accept", json={"token": created["token"]})
    assert_problem(early, 403, "email_unverified")
    # Another verified address: 403 naming the reason.
    stranger = await iam_aiki.signup("stranger@example.com")
    wrong = await stranger.http.post(f"{API}/invitations/accept", json={"token": created["token"]})
    assert_problem(wrong, 403, "forbidden")
    assert "another email address" in wrong.json()["detail"]
    # Verified and matching: accepted, and again (idempotent).
    token = iam_aiki.last_token("inv@example.com", "/ui/verify-email")
    invitee = iam_aiki.session_http()
    assert (await invitee.post(f"{API}/auth/verify-email", json={"token": token})).status_code == 200
    for _ in range(2):
        ok = await invitee.post(f"{API}/invitations/accept", json={"token": created["token"]})
        assert ok.status_code == 200, ok.text
        assert (ok.json()["id"], ok.json()["role"]) == (owner.org_id, "member")


async def test_parallel_accepts_of_one_invitation_all_succeed_and_log_no_sql(
    iam_aiki: IamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11: four parallel accepts answered [200, 500, 500, 500] and logged the SQL parameters."""
    owner = await iam_aiki.signup("owner@example.com")
    body = {"email": "par@example.com", "namespace_id": owner.namespace_id, "namespace_role": "viewer"}
    resp = await owner.http.post(f"{API}/organizations/{owner.org_id}/invitations", json=body)
    token = resp.json()["token"]
    person = await iam_aiki.signup("par@example.com")
    caplog.set_level(logging.INFO)
    answers = await asyncio.gather(
        *(person.http.post(f"{API}/invitations/accept", json={"token": token}) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert {a.json()["id"] for a in answers} == {owner.org_id}
    members = await rows(
        iam_aiki, sa.select(organization_members).where(organization_members.c.organization_id == owner.org_id)
    )
    assert sorted(m["role"] for m in members) == ["member", "owner"]
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "parameters" not in logged.lower()
    assert token not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
