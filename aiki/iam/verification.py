"""Proving an email address: sign-up with verification, mailed links, password reset.

Why: an address nobody proved is a claim, not an identity. Before this module, whoever signed up
first with ``victim@example.com`` owned that name here, and a later SSO login of the real owner
was linked to the squatter's account (a pre-account takeover). Now:

* **Sign-up** (:func:`register`) answers the same for every address: "check your email", and no
  session. A new address gets an *unverified* account (with its organization and namespace) and a
  verification link. An address with a *verified* account gets a notice instead ("someone tried to
  sign up with your address; log in or reset your password"); nothing changes.
* **A still-unverified address signed up again**: the account stays, but the newest sign-up wins.
  Its link carries the password that sign-up chose (stored hashed with the token) and every older
  link of the account stops working. Following it sets that password, verifies the address and
  ends every session of the account. So only whoever controls the mailbox verifies, and they
  verify *their own* sign-up: a squatter's password is gone the moment the owner signs up and
  clicks. (The organization the first sign-up created is kept: an unverified account can do
  nothing in it.)
* **Unverified accounts** can log in, but every API route answers ``403 email_unverified``
  except ``GET /auth/me``, ``POST /auth/logout`` and ``POST /auth/verify-email/resend``; the
  dashboard shows only "verify your email" with a resend button.
* **Following a link** is a ``POST`` (the dashboard's link opens a page with a button): mail
  scanners that fetch every link must not consume it. It verifies the address and opens a
  session.
* **Password reset** (:func:`request_password_reset`, :func:`reset_password`): the same answer for
  known and unknown addresses (the mail goes out in the background, so timing says nothing);
  the link sets a new password, verifies the address (the link proves the mailbox) and ends every
  session of the account.
* **Accounts that existed before** (migration 0009): password accounts start unverified and verify
  at their next login (resend button); accounts made through an OpenID provider are verified.

Tokens are 32 random bytes (URL-safe), stored only as an HMAC under the server secret
(``Secrets.email_token_hash``), used once (``DELETE ... RETURNING``), and expire: verification
links after :data:`VERIFY_TTL_S`, reset links after :data:`RESET_TTL_S`. A new link of one purpose
replaces the account's older ones.

With ``AIKI_EMAIL_VERIFICATION=off`` sign-up signs in at once (``accounts.signup``); the accounts
it makes stay unverified, so an OpenID login never links to them.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import audit
from aiki.iam.accounts import (
    NewSession,
    SignUpForm,
    insert_account,
    normalize_email,
    open_session,
    prepare_signup,
    user_view,
)
from aiki.iam.context import Iam
from aiki.iam.mail import Email, deliver
from aiki.iam.models import NamespaceView, OrganizationView, SignedIn
from aiki.iam.policy import Principal
from aiki.iam.repos import (
    EmailTokenRepository,
    NamespaceDirectory,
    OrganizationRepository,
    Row,
    SessionRepository,
    UserRepository,
)
from aiki.iam.throttle import throttle
from aiki.platform.db.raw import is_unique_violation
from aiki.platform.domain.errors import LinkInvalid, Unauthenticated
from aiki.platform.domain.ids import new_id

VERIFY_TTL_S = 24 * 3600
RESET_TTL_S = 3600
VERIFY = "verify"
PASSWORD_RESET = "password_reset"
# Dashboard pages the links open (they show a button; the POST behind it uses the token).
VERIFY_PATH = "/ui/verify-email"
RESET_PATH = "/ui/reset-password"
_MAX_TOKEN_LENGTH = 200  # ours are 43 characters


# -- links and messages ---------------------------------------------------------------------------


def _link(iam: Iam, path: str, token: str) -> str:
    return f"{iam.config.base_url.rstrip('/')}{path}?token={token}"


def verification_email(iam: Iam, address: str, token: str, *, repeated: bool) -> Email:
    hours = VERIFY_TTL_S // 3600
    lines = [
        "Welcome to Aiki.",
        "",
        "Confirm that this is your email address by opening this link:",
        "",
        _link(iam, VERIFY_PATH, token),
        "",
        f"The link works once, for {hours} hours.",
    ]
    if repeated:
        lines += [
            "",
            "This address was signed up more than once before it was confirmed. This link confirms the",
            "latest sign-up, with the password chosen there; earlier links no longer work.",
        ]
    lines += ["", "If you did not sign up, ignore this message: nothing happens without the link."]
    return Email(to=address, subject="Confirm your email address for Aiki", text="\n".join(lines))


def taken_notice_email(iam: Iam, address: str) -> Email:
    base = iam.config.base_url.rstrip("/")
    text = "\n".join(
        [
            "Someone tried to sign up for Aiki with this email address, which already has an account.",
            "",
            "If it was you, log in instead:",
            f"{base}/ui/login",
            "",
            "Forgot your password? Reset it here:",
            f"{base}/ui/forgot-password",
            "",
            "If it was not you, you can ignore this message: your account has not changed.",
        ]
    )
    return Email(to=address, subject="Someone tried to sign up with your address", text=text)


def reset_email(iam: Iam, address: str, token: str) -> Email:
    minutes = RESET_TTL_S // 60
    text = "\n".join(
        [
            "Someone (we hope you) asked to reset the password of your Aiki account.",
            "",
            "Choose a new password here:",
            "",
            _link(iam, RESET_PATH, token),
            "",
            f"The link works once, for {minutes} minutes. Setting a new password logs out every session.",
            "",
            "If you did not ask, ignore this message: your password has not changed.",
        ]
    )
    return Email(to=address, subject="Reset your Aiki password", text=text)


# -- tokens ---------------------------------------------------------------------------------------


async def _issue(
    iam: Iam, conn: AsyncConnection, user_id: str, purpose: str, ttl_s: int, password_hash: str | None = None
) -> str:
    """A new link token for ``user_id``; the user's older tokens of ``purpose`` stop working."""
    token = secrets.token_urlsafe(32)
    now = iam.now()
    await EmailTokenRepository(conn).replace(
        {
            "id": new_id(),
            "user_id": user_id,
            "purpose": purpose,
            "token_hash": iam.secrets.email_token_hash(token),
            "password_hash": password_hash,
            "created_at": now,
            "expires_at": now + ttl_s * 1000,
        }
    )
    return token


async def _take(iam: Iam, conn: AsyncConnection, token: str, purpose: str, what: str) -> Row:
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise LinkInvalid(f"this {what} link is not valid", field="$.token")
    row = await EmailTokenRepository(conn).take(iam.secrets.email_token_hash(token), purpose)
    if row is None:
        raise LinkInvalid(f"this {what} link is not valid (unknown, already used, or replaced by a newer one)")
    if row["expires_at"] <= iam.now():
        raise LinkInvalid(f"this {what} link has expired; ask for a new one")
    return row


# -- sign-up --------------------------------------------------------------------------------------


async def register(
    iam: Iam,
    *,
    email: str,
    password: str,
    name: str | None,
    organization_name: str | None,
    namespace_name: str | None,
    ip: str | None,
    user_agent: str | None,
) -> NewSession | None:
    """Sign up. With verification off: ``accounts.signup`` (a session at once). With it on
    (the default): mail a link or a notice and return ``None`` — the same for every address."""
    if not iam.config.email_verification:
        from aiki.iam.accounts import signup

        return await signup(
            iam,
            email=email,
            password=password,
            name=name,
            organization_name=organization_name,
            namespace_name=namespace_name,
            ip=ip,
            user_agent=user_agent,
        )
    # Hashed whatever the address: a taken address answers after the same work as a free one.
    form = await prepare_signup(
        iam,
        email=email,
        password=password,
        name=name,
        organization_name=organization_name,
        namespace_name=namespace_name,
        ip=ip,
    )
    try:
        message = await _register(iam, form, ip)
    except Exception as exc:
        if not is_unique_violation(exc):
            raise
        # Two sign-ups of one new address raced: the other created the account; this one is a repeat.
        message = await _register(iam, form, ip)
    await deliver(iam.mailer, message)
    return None


async def _register(iam: Iam, form: SignUpForm, ip: str | None) -> Email:
    address, password_hash = form.address, form.password_hash
    now = iam.now()
    async with iam.db.transaction() as conn:
        users = UserRepository(conn)
        row = await users.by_email(address)
        if row is not None and row["email_verified_at"] is not None:
            await audit.record(
                iam, None, "user.signup", "refused", conn=conn, actor_label=address, target_type="user",
                target_id=row["id"], ip=ip, detail={"reason": "email taken"},
            )  # fmt: skip
            return taken_notice_email(iam, address)
        if row is not None:
            # The newest sign-up of an unverified address: its link carries its password (see module doc).
            token = await _issue(iam, conn, row["id"], VERIFY, VERIFY_TTL_S, password_hash)
            await audit.record(
                iam, None, "user.signup", "pending", conn=conn, actor_label=address, target_type="user",
                target_id=row["id"], ip=ip, detail={"repeated": True},
            )  # fmt: skip
            return verification_email(iam, address, token, repeated=True)
        user_id = new_id()
        org_row, _ = await insert_account(iam, conn, form, user_id, now)
        token = await _issue(iam, conn, user_id, VERIFY, VERIFY_TTL_S)
        await audit.record(
            iam, None, "user.signup", "pending", conn=conn, actor_label=address, organization_id=org_row["id"],
            target_type="user", target_id=user_id, ip=ip,
        )  # fmt: skip
    return verification_email(iam, address, token, repeated=False)


# -- verification ---------------------------------------------------------------------------------


async def verify_email(
    iam: Iam, token: str, *, ip: str | None, user_agent: str | None, previous_session_id: str | None
) -> NewSession:
    """Follow a verification link: verify the address and open a session (the link proves the mailbox).

    A link of a repeated sign-up also sets that sign-up's password and ends the account's other
    sessions (they may be a squatter's).
    """
    now = iam.now()
    async with iam.db.transaction() as conn:
        taken = await _take(iam, conn, token, VERIFY, "verification")
        user_id = taken["user_id"]
        users = UserRepository(conn)
        sessions = SessionRepository(conn)
        if taken["password_hash"] is not None:
            await users.set_password_hash(user_id, taken["password_hash"], now)
            await sessions.revoke_all_of(user_id, now)
        elif previous_session_id is not None:
            await sessions.revoke(previous_session_id, now)
        await users.mark_verified(user_id, now)
        await EmailTokenRepository(conn).forget(user_id, VERIFY)
        row = await users.get(user_id)
        assert row is not None  # the token's foreign key cascades with the user
        session_id, cookie, expires_at = await open_session(iam, conn, user_id, ip, user_agent)
        principal = Principal(kind="user", id=user_id, label=row["email"] or user_id, user_id=user_id)
        organization, namespace = await _landing(conn, user_id)
        await audit.record(
            iam, principal, "user.verify_email", conn=conn, organization_id=organization.id if organization else None,
            target_type="user", target_id=user_id, ip=ip,
        )  # fmt: skip
    signed_in = SignedIn(
        user=user_view(row), organization=organization, namespace=namespace, session_expires_at=expires_at
    )
    return NewSession(signed_in=signed_in, session_id=session_id, cookie=cookie)


async def _landing(conn: AsyncConnection, user_id: str) -> tuple[OrganizationView | None, NamespaceView | None]:
    """Where a person lands: their first organization and, if they administer it, its first namespace."""
    org_rows = await OrganizationRepository(conn).of_user(user_id)
    if not org_rows:
        return None, None
    organization = OrganizationView(**org_rows[0])
    if organization.role not in ("owner", "admin"):
        return organization, None
    ns_rows = await NamespaceDirectory(conn).of_organization(organization.id)
    if not ns_rows:
        return organization, None
    ns = ns_rows[0]
    return organization, NamespaceView(
        id=ns["id"], organization_id=ns["organization_id"], name=ns["name"], created_at=ns["created_at"], role="admin"
    )


async def resend_verification(iam: Iam, principal: Principal, ip: str | None) -> bool:
    """Mail the signed-in person a fresh verification link (older ones stop working).

    Returns False, sending nothing, when the address is verified already (or the account has none).
    """
    if principal.user_id is None:
        raise Unauthenticated("log in to ask for a verification link")
    await throttle(iam, "signup", ip)  # it mails like a sign-up: the same allowance per address
    async with iam.db.transaction() as conn:
        row = await UserRepository(conn).get(principal.user_id)
        if row is None or row["email"] is None or row["email_verified_at"] is not None:
            return False
        token = await _issue(iam, conn, row["id"], VERIFY, VERIFY_TTL_S)
        await audit.record(
            iam, principal, "user.verification_sent", conn=conn, target_type="user", target_id=row["id"], ip=ip
        )
    await deliver(iam.mailer, verification_email(iam, row["email"], token, repeated=False))
    return True


# -- password reset -------------------------------------------------------------------------------

# Reset mails go out in the background: a known address must not answer slower than an unknown one.
_background: set[asyncio.Task[Any]] = set()


async def request_password_reset(iam: Iam, email: str, ip: str | None) -> None:
    """Mail a reset link if an account has this address; answer the same either way."""
    address = normalize_email(email)
    await throttle(iam, "password_reset", ip)
    async with iam.db.transaction() as conn:
        row = await UserRepository(conn).by_email(address)
        if row is None:
            await audit.record(
                iam, None, "user.password_reset_request", "failed", conn=conn, actor_label=address, ip=ip,
                detail={"reason": "unknown email"},
            )  # fmt: skip
            return
        token = await _issue(iam, conn, row["id"], PASSWORD_RESET, RESET_TTL_S)
        await audit.record(
            iam, None, "user.password_reset_request", conn=conn, actor_label=address, target_type="user",
            target_id=row["id"], ip=ip,
        )  # fmt: skip
    task = asyncio.create_task(deliver(iam.mailer, reset_email(iam, address, token)))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def mail_settled() -> None:
    """Wait for reset mails still going out in the background (tests; shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


async def reset_password(iam: Iam, token: str, password: str, ip: str | None) -> None:
    """Follow a reset link: set the new password, verify the address, end every session."""
    await throttle(iam, "password_reset", ip)
    iam.passwords.check_policy(password)  # before the link is used: a refused password keeps it valid
    password_hash = await iam.passwords.hash(password)
    now = iam.now()
    async with iam.db.transaction() as conn:
        taken = await _take(iam, conn, token, PASSWORD_RESET, "password reset")
        user_id = taken["user_id"]
        users = UserRepository(conn)
        account = await users.get(user_id)
        if account is not None:
            # Raised inside the transaction, this rolls the link's use back: it stays valid.
            iam.passwords.check_policy(password, email=account["email"])
        await users.set_password_hash(user_id, password_hash, now)
        await users.mark_verified(user_id, now)
        await SessionRepository(conn).revoke_all_of(user_id, now)
        await EmailTokenRepository(conn).forget(user_id)  # every pending link: the account is settled
        row = await users.get(user_id)
        label = row["email"] if row is not None else user_id
        principal = Principal(kind="user", id=user_id, label=label or user_id, user_id=user_id)
        await audit.record(
            iam, principal, "user.password_reset", conn=conn, target_type="user", target_id=user_id, ip=ip
        )
