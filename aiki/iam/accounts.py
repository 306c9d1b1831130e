"""People: sign-up, login, sessions, logout; and how a request's credentials become a principal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.iam import audit, login_guard
from aiki.iam.context import Iam
from aiki.iam.crypto import key_prefix, parse_api_key
from aiki.iam.key_cache import CachedKey
from aiki.iam.key_rotation import verified_key_hash
from aiki.iam.models import Me, NamespaceView, OrganizationView, SignedIn, UserView
from aiki.iam.policy import Grant, Principal
from aiki.iam.rate_limit import WINDOW_MS
from aiki.iam.repos import (
    ApiKeyDirectory,
    NamespaceDirectory,
    OrganizationRepository,
    RateLimitRepository,
    Row,
    SessionRepository,
    UserRepository,
)
from aiki.iam.throttle import throttle
from aiki.platform.db.raw import is_unique_violation
from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID, DEFAULT_ORGANIZATION_ID
from aiki.platform.domain.errors import AlreadyExists, InputInvalid, Unauthenticated
from aiki.platform.domain.ids import new_id

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
# `last_seen_at` / `last_used_at` are written at most this often (per process), not on every request.
_TOUCH_EVERY_MS = 60_000


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL_RE.match(value):
        raise InputInvalid(f"email {email!r} is not an email address", field="$.email")
    return value


def user_view(row: Row) -> UserView:
    return UserView(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        created_at=row["created_at"],
        email_verified=row.get("email_verified_at") is not None,
    )


def _optional_text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > limit or "\x00" in text:
        raise InputInvalid(f"{field.removeprefix('$.')} must be 1 to {limit} characters (or left out)", field=field)
    return text


@dataclass(frozen=True, slots=True)
class NewSession:
    signed_in: SignedIn
    session_id: str
    cookie: str


async def open_session(
    iam: Iam, conn: AsyncConnection, user_id: str, ip: str | None, ua: str | None
) -> tuple[str, str, int]:
    now = iam.now()
    session_id = new_id()
    expires_at = now + iam.config.session_absolute_s * 1000
    await SessionRepository(conn).insert(
        {
            "id": session_id,
            "user_id": user_id,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": expires_at,
            "ip": ip,
            "user_agent": (ua or "")[:300] or None,
        }
    )
    cookie = iam.secrets.sign_session(session_id, now // 1000, expires_at // 1000)
    return session_id, cookie, expires_at


async def create_home(
    iam: Iam,
    conn: AsyncConnection,
    user_id: str,
    organization_name: str,
    namespace_name: str | None,
    now: int,
) -> tuple[Row, Row]:
    """Make a new user the owner of a fresh organization with one namespace (or, on ``aiki dev``,
    of the implicit ``default`` organization while nobody owns it). Returns both rows."""
    orgs = OrganizationRepository(conn)
    directory = NamespaceDirectory(conn)
    if iam.config.claim_default_organization and await orgs.count_members(DEFAULT_ORGANIZATION_ID) == 0:
        org_row = await orgs.get(DEFAULT_ORGANIZATION_ID)
        ns_row = await directory.get(DEFAULT_NAMESPACE_ID)
        assert org_row is not None
        assert ns_row is not None
    else:
        org_id = new_id()
        org_row = {"id": org_id, "name": organization_name, "created_at": now}
        await orgs.insert(org_row)
        ns_row = {"id": new_id(), "organization_id": org_id, "name": namespace_name or "default", "created_at": now}
        await directory.insert(ns_row)
    await orgs.add_member(org_row["id"], user_id, "owner", now)
    return org_row, ns_row


@dataclass(frozen=True, slots=True)
class SignUpForm:
    """A sign-up's checked fields and its password's hash (the password itself is gone)."""

    address: str
    password_hash: str
    name: str | None
    organization_name: str | None
    namespace_name: str | None


async def prepare_signup(
    iam: Iam,
    *,
    email: str,
    password: str,
    name: str | None,
    organization_name: str | None,
    namespace_name: str | None,
    ip: str | None,
) -> SignUpForm:
    """Check a sign-up's fields, throttle it and hash its password: the work every sign-up does
    before it touches the accounts (so a taken address answers after the same work as a free one)."""
    address = normalize_email(email)
    form_name = _optional_text(name, "$.name", 200)
    form_organization = _optional_text(organization_name, "$.organization", 100)
    form_namespace = _optional_text(namespace_name, "$.namespace", 100)
    iam.passwords.refuse_if_busy()  # before any query: a refused flood costs the loop nothing
    await throttle(iam, "signup", ip)
    iam.passwords.check_policy(password, email=address)
    password_hash = await iam.passwords.hash(password)
    return SignUpForm(address, password_hash, form_name, form_organization, form_namespace)


async def insert_account(
    iam: Iam, conn: AsyncConnection, form: SignUpForm, user_id: str, now: int, *, verified_at: int | None = None
) -> tuple[Row, Row]:
    """Insert the user of ``form`` and their home (organization and namespace); returns the home."""
    await UserRepository(conn).insert(
        {
            "id": user_id,
            "email": form.address,
            "password_hash": form.password_hash,
            "name": form.name,
            "created_at": now,
            "updated_at": now,
            "email_verified_at": verified_at,
        }
    )
    return await create_home(
        iam, conn, user_id, form.organization_name or f"{form.address}'s organization", form.namespace_name, now
    )


async def signup(
    iam: Iam,
    *,
    email: str,
    password: str,
    name: str | None,
    organization_name: str | None,
    namespace_name: str | None,
    ip: str | None,
    user_agent: str | None,
) -> NewSession:
    """Create a user, their organization (owner) and its first namespace, and sign them in.

    The sign-up of servers with email verification off (``AIKI_EMAIL_VERIFICATION=off``); the
    account stays unverified. With verification on, ``aiki.iam.verification.register`` signs up.
    """
    form = await prepare_signup(
        iam,
        email=email,
        password=password,
        name=name,
        organization_name=organization_name,
        namespace_name=namespace_name,
        ip=ip,
    )
    address = form.address
    now = iam.now()
    user_id = new_id()
    try:
        async with iam.db.transaction() as conn:
            if await UserRepository(conn).by_email(address) is not None:
                raise AlreadyExists("an account with this email already exists; log in instead", field="$.email")
            org_row, ns_row = await insert_account(iam, conn, form, user_id, now)
            org_id, ns_id = org_row["id"], ns_row["id"]
            session_id, cookie, expires_at = await open_session(iam, conn, user_id, ip, user_agent)
            user = UserView(id=user_id, email=address, name=form.name, created_at=now)
            principal = Principal(kind="user", id=user_id, label=address, user_id=user_id, session_id=session_id)
            await audit.record(
                iam,
                principal,
                "user.signup",
                conn=conn,
                organization_id=org_id,
                target_type="user",
                target_id=user_id,
                ip=ip,
            )
    except Exception as exc:
        if is_unique_violation(exc):
            raise AlreadyExists("an account with this email already exists; log in instead", field="$.email") from None
        raise
    return NewSession(
        signed_in=SignedIn(
            user=user,
            organization=OrganizationView(
                id=org_id, name=org_row["name"], created_at=org_row["created_at"], role="owner"
            ),
            namespace=NamespaceView(
                id=ns_id, organization_id=org_id, name=ns_row["name"], created_at=ns_row["created_at"], role="admin"
            ),
            session_expires_at=expires_at,
        ),
        session_id=session_id,
        cookie=cookie,
    )


async def login(
    iam: Iam,
    *,
    email: str,
    password: str,
    ip: str | None,
    user_agent: str | None,
    previous_session_id: str | None,
) -> NewSession:
    """Check the password and open a fresh session; the session presented before login is revoked."""
    address = normalize_email(email)
    iam.passwords.refuse_if_busy()  # before any query: a refused flood costs the loop nothing
    await throttle(iam, "login", ip)
    await login_guard.check(iam, address, ip)
    # Known and unknown emails take the same steps: the same queries, one argon2 verification
    # (of a dummy hash when there is no account), the same failure bookkeeping. Only the audit
    # rows differ (one per organization of a known account), written in the same transaction.
    async with iam.db.engine.connect() as conn:
        row = await UserRepository(conn).by_email(address)
        org_ids: list[str | None] = [
            r["id"] for r in await OrganizationRepository(conn).of_user(row["id"] if row else "")
        ]
    if row is None:
        await iam.passwords.burn(password)
        verified = False
    else:
        verified = await iam.passwords.verify(row["password_hash"], password)
    if not verified:
        async with iam.db.transaction() as conn:
            await login_guard.record_failure(iam, conn, address, ip)
            for org_id in org_ids or [None]:
                await audit.record(
                    iam,
                    None,
                    "login",
                    "failed",
                    conn=conn,
                    actor_label=address,
                    organization_id=org_id,
                    target_type="user",
                    target_id=row["id"] if row else None,
                    ip=ip,
                    detail={"reason": "wrong password" if row else "unknown email"},
                )
        raise Unauthenticated("wrong email or password")
    assert row is not None
    now = iam.now()
    async with iam.db.transaction() as conn:
        if iam.passwords.needs_rehash(row["password_hash"]):
            await UserRepository(conn).set_password_hash(row["id"], await iam.passwords.hash(password), now)
        sessions = SessionRepository(conn)
        if previous_session_id is not None:
            await sessions.revoke(previous_session_id, now)
        await login_guard.record_success(conn, address, ip)
        session_id, cookie, expires_at = await open_session(iam, conn, row["id"], ip, user_agent)
        principal = Principal(kind="user", id=row["id"], label=address, user_id=row["id"], session_id=session_id)
        org_rows = await OrganizationRepository(conn).of_user(row["id"])
        for org in org_rows or [{"id": None}]:
            await audit.record(
                iam,
                principal,
                "login",
                conn=conn,
                organization_id=org["id"],
                target_type="user",
                target_id=row["id"],
                ip=ip,
            )
    first = org_rows[0] if org_rows else None
    return NewSession(
        signed_in=SignedIn(
            user=user_view(row),
            organization=OrganizationView(
                id=first["id"], name=first["name"], created_at=first["created_at"], role=first["role"]
            )
            if first
            else None,
            namespace=None,
            session_expires_at=expires_at,
        ),
        session_id=session_id,
        cookie=cookie,
    )


async def logout(iam: Iam, principal: Principal, ip: str | None) -> None:
    if principal.session_id is None:
        return
    now = iam.now()
    async with iam.db.transaction() as conn:
        await SessionRepository(conn).revoke(principal.session_id, now)
        await audit.record(iam, principal, "logout", conn=conn, target_type="user", target_id=principal.user_id, ip=ip)


async def me(iam: Iam, principal: Principal) -> Me:
    assert principal.user_id is not None
    async with iam.db.engine.connect() as conn:
        row = await UserRepository(conn).get(principal.user_id)
        orgs = await OrganizationRepository(conn).of_user(principal.user_id)
    if row is None:
        raise Unauthenticated("the session's user no longer exists")
    return Me(user=user_view(row), organizations=[OrganizationView(**o) for o in orgs])


# -- authentication of requests ------------------------------------------------------------------


async def authenticate_session(iam: Iam, cookie: str) -> Principal:
    """The person a session cookie names, if the session is live; revokes it when it has expired."""
    session_id = iam.secrets.session_id(cookie)
    if session_id is None:
        raise Unauthenticated("the session cookie is invalid")
    async with iam.db.engine.connect() as conn:
        row = await SessionRepository(conn).with_user(session_id)
    if row is None or row["revoked_at"] is not None:
        raise Unauthenticated("the session has ended; log in again")
    now = iam.now()
    idle_deadline = row["last_seen_at"] + iam.config.session_idle_s * 1000
    if now >= row["expires_at"] or now >= idle_deadline:
        async with iam.db.transaction() as conn:
            await SessionRepository(conn).revoke(session_id, now)
        raise Unauthenticated("the session has expired; log in again")
    if now - row["last_seen_at"] >= _TOUCH_EVERY_MS:
        async with iam.db.transaction() as conn:
            await SessionRepository(conn).touch(session_id, now)
    return Principal(
        kind="user",
        id=row["user_id"],
        label=row["email"] or row["user_id"],
        user_id=row["user_id"],
        session_id=session_id,
        email_verified=row["email_verified_at"] is not None,
    )


async def authenticate_key(iam: Iam, token: str) -> Principal:
    """The API key ``token`` is, if live. The format and checksum are checked before any lookup.

    The key's row comes from the verified-key cache when fresh (``aiki.iam.key_cache``); either way
    the token's HMAC is compared with the row's and the expiry checked. Counting the request
    against the per-key limit and touching ``last_used_at`` write only now and then.
    """
    parsed = parse_api_key(token)
    if parsed is None:
        raise Unauthenticated("the API key is malformed (expected aiki_<id>_<secret>)")
    now = iam.now()
    key = iam.key_cache.get(parsed.key_id, now)
    if key is None:
        key = await _look_up_key(iam, parsed.key_id, token, now)
    else:
        stored = await verified_key_hash(iam, key.id, token, key.key_hash)
        if stored is None:
            raise Unauthenticated("the API key is not valid")
        key.key_hash = stored
    _check_expiry(key, now)
    await _meter(iam, key, now)
    return Principal(
        kind="api_key",
        id=key.id,
        label=key_prefix(key.id),
        key_role=key.role,
        key_namespace_id=key.namespace_id,
        key_organization_id=key.organization_id,
    )


async def _look_up_key(iam: Iam, key_id: str, token: str, now: int) -> CachedKey:
    async with iam.db.engine.connect() as conn:
        row = await ApiKeyDirectory(conn).get(key_id)
    stored = None if row is None else await verified_key_hash(iam, key_id, token, row["key_hash"])
    if row is None or stored is None:
        raise Unauthenticated("the API key is not valid")
    if row["revoked_at"] is not None:
        raise Unauthenticated("the API key has been revoked")
    key = CachedKey.of({**row, "key_hash": stored}, now)
    _check_expiry(key, now)
    iam.key_cache.put(key)  # only keys that passed every check
    return key


def _check_expiry(key: CachedKey, now: int) -> None:
    if key.expires_at is not None and now >= key.expires_at:
        raise Unauthenticated("the API key has expired")


async def _meter(iam: Iam, key: CachedKey, now: int) -> None:
    """Touch ``last_used_at`` when due, and count the request against the key's limit."""
    if key.last_used_at is None or now - key.last_used_at >= _TOUCH_EVERY_MS:
        key.last_used_at = now  # before the write: concurrent requests of this key do not touch too
        async with iam.db.transaction() as conn:
            await ApiKeyDirectory(conn).mark_used(key.id, now)
    limit = iam.config.api_requests_per_minute
    if limit is None:
        return

    async def fold(hits: int) -> tuple[int, int]:
        async with iam.db.transaction() as conn:
            return await RateLimitRepository(conn).hit(f"api:{key.id}", now, WINDOW_MS, hits)

    await iam.api_limits.hit(key.id, limit, now, fold)


async def namespace_grant(iam: Iam, principal: Principal, namespace_id: str) -> Grant | None:
    """The principal's roles in a namespace (``None``: it does not exist, or not for this principal)."""
    if principal.kind == "api_key":
        if namespace_id != principal.key_namespace_id or principal.key_organization_id is None:
            return None
        return Grant(organization_id=principal.key_organization_id, namespace_id=namespace_id)
    assert principal.user_id is not None
    async with iam.db.engine.connect() as conn:
        row: dict[str, Any] | None = await NamespaceDirectory(conn).grant(namespace_id, principal.user_id)  # type: ignore[assignment]
    if row is None or row["org_role"] is None:
        return None
    return Grant(
        organization_id=row["organization_id"],
        namespace_id=namespace_id,
        org_role=row["org_role"],
        namespace_role=row["namespace_role"],
    )


async def organization_grant(iam: Iam, principal: Principal, organization_id: str) -> Grant | None:
    if principal.kind == "api_key":
        if organization_id != principal.key_organization_id:
            return None
        return Grant(organization_id=organization_id)
    assert principal.user_id is not None
    async with iam.db.engine.connect() as conn:
        role = await OrganizationRepository(conn).member_role(organization_id, principal.user_id)
    if role is None:
        return None
    return Grant(organization_id=organization_id, org_role=role)
