"""OIDC login wired into IAM: pending logins in the database, users found by ``(issuer, subject)``.

The relying party (``aiki.iam.oidc``) proves who signed in at the provider; this module decides
who that is here and opens the session:

* **Pre-login binding.** ``begin`` gives the browser a random pre-login token (the API layer keeps
  it in an ``HttpOnly`` cookie) and stores the ``PendingLogin`` in ``oidc_logins`` under the
  token's HMAC. ``complete`` takes it back with one ``DELETE ... RETURNING``: a callback is used
  once, and only by the browser that started the login.
* **Which user.** The identity ``(issuer, subject)`` first. Else, only when the provider asserts a
  *verified* email, the user with that email gets the identity linked — if that account verified
  its address too; an unverified one is refused (``oidc_account_unverified``: it may be a squatter's
  pre-registered account, see ``aiki.iam.verification``). Else a new user: with the
  email only if verified (an unverified one could squat someone's address), owning a new
  organization and namespace, as a sign-up does.
* **Session.** Always a fresh session row; a session the browser presented before is revoked (no
  fixation), and the pre-login token is never a session.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import audit
from aiki.iam.accounts import NewSession, create_home, normalize_email, open_session, user_view
from aiki.iam.context import Iam
from aiki.iam.models import NamespaceView, OrganizationView, SignedIn
from aiki.iam.oidc import OidcRelyingParty, PendingLogin, VerifiedIdentity, finish_login, start_login
from aiki.iam.policy import Principal
from aiki.iam.repos import (
    IdentityRepository,
    OidcLoginRepository,
    OrganizationRepository,
    RateLimitRepository,
    Row,
    SessionRepository,
    UserRepository,
)
from aiki.platform.db.raw import is_unique_violation
from aiki.platform.domain.errors import InputInvalid, OidcError, RateLimited
from aiki.platform.domain.ids import new_id

MAX_STATE_LENGTH = 128  # ours are 43 characters; anything longer is not ours
MAX_RETURN_TO_LENGTH = 2000


def safe_return_to(value: str | None) -> str | None:
    """``value`` if it is a path on this server, else ``InputInvalid`` (never an open redirect).

    A local path starts with one ``/``; ``//host`` and ``/\\host`` are other hosts to browsers.
    """
    if value is None or value == "":
        return None
    if (
        len(value) > MAX_RETURN_TO_LENGTH
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(not ch.isprintable() or ch.isspace() or ch == "\\" for ch in value)
    ):
        raise InputInvalid("return_to must be a path on this server, like /runs", field="return_to")
    return value


def relying_party(iam: Iam) -> OidcRelyingParty:
    rp = iam.oidc
    if rp is None:
        raise OidcError(
            "oidc_not_configured", "OIDC login is not configured on this server (set AIKI_OIDC_ISSUER and friends)"
        )
    return rp


class DbPendingLoginStore:
    """The ``PendingLoginStore`` of one browser, in the ``oidc_logins`` table."""

    def __init__(self, iam: Iam, browser_hash: str, ttl_ms: int, *, also_under: Sequence[str] = ()) -> None:
        self.iam = iam
        self.browser_hash = browser_hash
        # Hashes of the same cookie under the previous server secret: logins begun before a rotation.
        self.also_under = tuple(also_under)
        self.ttl_ms = ttl_ms

    async def put(self, pending: PendingLogin) -> None:
        async with self.iam.db.transaction() as conn:
            logins = OidcLoginRepository(conn, self.browser_hash)
            await logins.purge_before(self.iam.now() - self.ttl_ms)
            await logins.insert(pending.state, pending.to_json(), pending.created_at)

    async def take(self, state: str) -> PendingLogin | None:
        if len(state) > MAX_STATE_LENGTH:
            return None
        stored = None
        async with self.iam.db.transaction() as conn:
            for browser_hash in (self.browser_hash, *self.also_under):
                stored = await OidcLoginRepository(conn, browser_hash).take(state)
                if stored is not None:
                    break
        return PendingLogin.from_json(stored) if stored is not None else None


def _store_of_browser(iam: Iam, browser_token: str, ttl_ms: int) -> DbPendingLoginStore:
    """The logins a browser's pre-login cookie may have begun, under the current or previous secret."""
    current, *previous = iam.secrets.oidc_browser_hashes(browser_token)
    return DbPendingLoginStore(iam, current, ttl_ms, also_under=previous)


class _NoLogins:
    """The store of a browser that presents no pre-login cookie: it has nothing in progress."""

    async def put(self, pending: PendingLogin) -> None:  # pragma: no cover - never started here
        raise AssertionError("a login is started with a fresh browser token")

    async def take(self, state: str) -> PendingLogin | None:
        return None


@dataclass(frozen=True, slots=True)
class StartedLogin:
    """Where to send the browser, and the pre-login token it must bring back to the callback."""

    url: str
    browser_token: str


@dataclass(frozen=True, slots=True)
class CompletedLogin:
    session: NewSession
    return_to: str | None
    outcome: str  # "existing", "linked" or "created"


async def begin(iam: Iam, *, return_to: str | None, ip: str | None = None) -> StartedLogin:
    rp = relying_party(iam)
    target = safe_return_to(return_to)
    await _check_start_rate(iam, ip)
    token = secrets.token_urlsafe(32)
    store = DbPendingLoginStore(iam, iam.secrets.oidc_browser_hash(token), rp.pending_ttl_ms)
    url = await start_login(rp, store, return_to=target, now_ms=iam.now())
    return StartedLogin(url=url, browser_token=token)


async def _check_start_rate(iam: Iam, ip: str | None) -> None:
    # Each start stores a row before anyone is authenticated: bound how fast one address can add them.
    now = iam.now()
    window = iam.config.login_window_s * 1000
    async with iam.db.transaction() as conn:
        count, start = await RateLimitRepository(conn).hit(f"oidc:ip:{ip or '-'}", now, window)
    if count > iam.config.login_max_per_ip:
        raise RateLimited(
            "too many logins started from this address; retry later", retry_after_s=(start + window - now + 999) // 1000
        )


async def complete(
    iam: Iam,
    browser_token: str | None,
    params: Mapping[str, str],
    *,
    ip: str | None,
    user_agent: str | None,
    previous_session_id: str | None,
) -> CompletedLogin:
    """Finish the login a callback answers and sign the user in (audited either way).

    Raises:
        OidcError: the callback is not this browser's login, or the provider's answer fails a check.
    """
    rp = relying_party(iam)
    store = _store_of_browser(iam, browser_token, rp.pending_ttl_ms) if browser_token else _NoLogins()
    try:
        identity, pending = await finish_login(rp, store, params, now_ms=iam.now())
    except OidcError as exc:
        await audit.record(
            iam,
            None,
            "oidc.login",
            "failed",
            actor_label=None,
            target_type="user",
            ip=ip,
            detail={"code": exc.code, "issuer": rp.config.issuer},
        )
        raise
    try:
        session, outcome = await _sign_in(iam, identity, ip, user_agent, previous_session_id)
    except OidcError as exc:
        detail = {"code": exc.code, "issuer": identity.issuer, "subject": identity.subject}
        await audit.record(iam, None, "oidc.login", "refused", target_type="user", ip=ip, detail=detail)
        raise
    except Exception as exc:
        if not is_unique_violation(exc):
            raise
        # The same person's first login raced with itself (two tabs): the other one created the user.
        session, outcome = await _sign_in(iam, identity, ip, user_agent, previous_session_id)
    return CompletedLogin(session=session, return_to=safe_return_to(pending.return_to), outcome=outcome)


def _provider_email(identity: VerifiedIdentity) -> str | None:
    """The identity's email, normalized, if the provider verified it (else it proves nothing)."""
    if not identity.may_link_by_email or identity.email is None:
        return None
    try:
        return normalize_email(identity.email)
    except InputInvalid:
        return None


async def _sign_in(
    iam: Iam, identity: VerifiedIdentity, ip: str | None, user_agent: str | None, previous_session_id: str | None
) -> tuple[NewSession, str]:
    now = iam.now()
    email = _provider_email(identity)
    home: tuple[Row, Row] | None = None
    async with iam.db.transaction() as conn:
        identities = IdentityRepository(conn)
        users = UserRepository(conn)
        row = await identities.user_of(identity.issuer, identity.subject)
        if row is not None:
            outcome = "existing"
            await identities.update_email(identity.issuer, identity.subject, identity.email, identity.email_verified)
        else:
            row = await users.by_email(email) if email is not None else None
            if row is not None and row["email_verified_at"] is None:
                # Whoever made that account never proved the address: linking would hand the SSO
                # user a squatter's account (or the squatter theirs). Refuse; nothing is created.
                raise OidcError(
                    "oidc_account_unverified",
                    "an account with this email exists but its address was never verified: log in with its "
                    "password and verify it, or reset its password, then sign in with SSO",
                )
            outcome = "linked" if row is not None else "created"
            if row is None:
                row, home = await _create_user(iam, conn, identity, email, now)
            await identities.insert(
                {
                    "id": new_id(),
                    "user_id": row["id"],
                    "issuer": identity.issuer,
                    "subject": identity.subject,
                    "email": (identity.email or "")[:320] or None,
                    "email_verified": identity.email_verified,
                    "created_at": now,
                }
            )
        if previous_session_id is not None:
            await SessionRepository(conn).revoke(previous_session_id, now)
        session_id, cookie, expires_at = await open_session(iam, conn, row["id"], ip, user_agent)
        label = row["email"] or f"{identity.issuer}#{identity.subject}"
        principal = Principal(kind="user", id=row["id"], label=label, user_id=row["id"], session_id=session_id)
        org_rows = await OrganizationRepository(conn).of_user(row["id"])
        for org in org_rows or [{"id": None}]:
            if outcome == "linked":
                await _audit(iam, conn, principal, "identity.link", org["id"], ip, identity)
            await _audit(iam, conn, principal, "oidc.login", org["id"], ip, identity)
        if home is not None:
            await _audit(iam, conn, principal, "user.signup", home[0]["id"], ip, identity)
    if home is not None:
        org_row, ns_row = home
        organization: OrganizationView | None = OrganizationView(
            id=org_row["id"], name=org_row["name"], created_at=org_row["created_at"], role="owner"
        )
        namespace: NamespaceView | None = NamespaceView(
            id=ns_row["id"],
            organization_id=org_row["id"],
            name=ns_row["name"],
            created_at=ns_row["created_at"],
            role="admin",
        )
    else:
        first = org_rows[0] if org_rows else None
        organization = OrganizationView(**first) if first else None
        namespace = None
    signed_in = SignedIn(
        user=user_view(row), organization=organization, namespace=namespace, session_expires_at=expires_at
    )
    return NewSession(signed_in=signed_in, session_id=session_id, cookie=cookie), outcome


async def _create_user(
    iam: Iam, conn: AsyncConnection, identity: VerifiedIdentity, email: str | None, now: int
) -> tuple[Row, tuple[Row, Row]]:
    user: dict[str, Any] = {
        "id": new_id(),
        "email": email,
        "password_hash": None,  # signs in through the provider only
        "name": (identity.name or "")[:200] or None,
        "created_at": now,
        "updated_at": now,
        # The provider verified the email (an unverified one is not kept), or there is none to verify.
        "email_verified_at": now,
    }
    await UserRepository(conn).insert(user)
    who = email or identity.name or identity.subject
    home = await create_home(iam, conn, user["id"], f"{who}'s organization"[:200], None, now)
    return user, home


async def _audit(
    iam: Iam,
    conn: AsyncConnection,
    principal: Principal,
    action: str,
    organization_id: str | None,
    ip: str | None,
    identity: VerifiedIdentity,
) -> None:
    await audit.record(
        iam,
        principal,
        action,
        conn=conn,
        organization_id=organization_id,
        target_type="user",
        target_id=principal.user_id,
        ip=ip,
        detail={"method": "oidc", "issuer": identity.issuer, "subject": identity.subject},
    )
