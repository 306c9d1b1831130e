"""Invitations to an organization: create, list, cancel, and accept one (joining its organization).

Callers are authorized before these run (``policy.authorize``).
"""

from __future__ import annotations

from typing import Any

from aiki.iam import audit
from aiki.iam.accounts import normalize_email
from aiki.iam.context import Iam
from aiki.iam.mail import Email, deliver
from aiki.iam.models import (
    CreatedInvitation,
    InvitationView,
    OrganizationView,
)
from aiki.iam.orgs import check_role
from aiki.iam.policy import NAMESPACE_ROLES, ORG_ROLES, Grant, Principal
from aiki.iam.repos import (
    InvitationRepository,
    NamespaceDirectory,
    NamespaceMemberRepository,
    OrganizationRepository,
    Row,
    UserRepository,
)
from aiki.iam.throttle import throttle
from aiki.platform.domain.errors import (
    InputInvalid,
    InvitationInvalid,
    NotFound,
    PermissionDenied,
)
from aiki.platform.domain.ids import new_id


def _invitation_view(row: Row, now: int) -> InvitationView:
    if row["accepted_at"] is not None:
        status = "accepted"
    elif row["cancelled_at"] is not None:
        status = "cancelled"
    elif row["expires_at"] <= now:
        status = "expired"
    else:
        status = "pending"
    return InvitationView(
        id=row["id"],
        organization_id=row["organization_id"],
        email=row["email"],
        role=row["role"],
        namespace_id=row["namespace_id"],
        namespace_role=row["namespace_role"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        status=status,
    )


async def create_invitation(
    iam: Iam,
    principal: Principal,
    grant: Grant,
    *,
    email: str,
    role: str,
    namespace_id: str | None,
    namespace_role: str | None,
    expires_in_s: int | None,
    ip: str | None,
) -> CreatedInvitation:
    address = normalize_email(email)
    check_role(role, ORG_ROLES, "$.role")
    if role == "owner" and grant.org_role != "owner":
        raise PermissionDenied("only an owner can invite an owner")
    if (namespace_id is None) != (namespace_role is None):
        raise InputInvalid("namespace_id and namespace_role go together", field="$.namespace_role")
    if namespace_role is not None:
        check_role(namespace_role, NAMESPACE_ROLES, "$.namespace_role")
    ttl = expires_in_s if expires_in_s is not None else iam.config.invitation_ttl_s
    if not 60 <= ttl <= 90 * 24 * 3600:
        raise InputInvalid("expires_in_s must be between 60 seconds and 90 days", field="$.expires_in_s")
    token = iam.secrets.new_invitation_token()
    now = iam.now()
    row: dict[str, Any] = {
        "id": new_id(),
        "organization_id": grant.organization_id,
        "email": address,
        "role": role,
        "namespace_id": namespace_id,
        "namespace_role": namespace_role,
        "token_hash": iam.secrets.invitation_hash(token),
        "invited_by": principal.user_id,
        "created_at": now,
        "expires_at": now + ttl * 1000,
        "accepted_at": None,
        "cancelled_at": None,
    }
    async with iam.db.transaction() as conn:
        if namespace_id is not None:
            ns = await NamespaceDirectory(conn).get(namespace_id)
            if ns is None or ns["organization_id"] != grant.organization_id:
                raise NotFound(f"namespace {namespace_id!r} not found")
        org = await OrganizationRepository(conn).get(grant.organization_id)
        values = {k: v for k, v in row.items() if k != "organization_id"}
        await InvitationRepository(conn, grant.organization_id).insert(values)
        await audit.record(
            iam,
            principal,
            "invitation.create",
            conn=conn,
            organization_id=grant.organization_id,
            namespace_id=namespace_id,
            target_type="invitation",
            target_id=row["id"],
            ip=ip,
            detail={"email": address, "role": role, "namespace_role": namespace_role},
        )
    url = f"{iam.config.base_url.rstrip('/')}/invitations/accept?token={token}"
    # Mailed to the invitee; the link is also answered once here, for the inviter to pass on.
    org_name = org["name"] if org is not None else "an organization"
    await deliver(iam.mailer, _invitation_email(address, principal.label, org_name, url, ttl))
    return CreatedInvitation(invitation=_invitation_view(row, now), token=token, url=url)


def _invitation_email(address: str, inviter: str, org_name: str, url: str, ttl_s: int) -> Email:
    days = max(1, ttl_s // 86400)
    org_name = " ".join(org_name.split())  # a name is free text: no line breaks into the Subject header
    text = "\n".join(
        [
            f"{inviter} invited you to join the organization {org_name!r} on Aiki.",
            "",
            "Accept the invitation here (log in, or sign up with this address, first):",
            "",
            url,
            "",
            f"The invitation is for {address} only and expires in {days} day{'s' if days != 1 else ''}.",
            "If you did not expect it, ignore this message.",
        ]
    )
    return Email(to=address, subject=f"You are invited to {org_name} on Aiki", text=text)


async def list_invitations(iam: Iam, organization_id: str) -> list[InvitationView]:
    now = iam.now()
    async with iam.db.engine.connect() as conn:
        rows = await InvitationRepository(conn, organization_id).list_pending(now)
    return [_invitation_view(r, now) for r in rows]


async def cancel_invitation(iam: Iam, principal: Principal, grant: Grant, invitation_id: str, ip: str | None) -> None:
    now = iam.now()
    async with iam.db.transaction() as conn:
        repo = InvitationRepository(conn, grant.organization_id)
        row = await repo.get(invitation_id)
        if row is None:
            raise NotFound(f"invitation {invitation_id!r} not found")
        if row["accepted_at"] is not None or row["cancelled_at"] is not None:
            raise InvitationInvalid("the invitation was already accepted or cancelled")
        await repo.update(invitation_id, {"cancelled_at": now})
        await audit.record(
            iam,
            principal,
            "invitation.cancel",
            conn=conn,
            organization_id=grant.organization_id,
            target_type="invitation",
            target_id=invitation_id,
            ip=ip,
        )


async def accept_invitation(iam: Iam, principal: Principal, token: str, ip: str | None) -> OrganizationView:
    """Join the inviting organization (and namespace) as the signed-in person the link was sent to.

    Only an account whose address matches the invitation's may accept, and (with email
    verification on) only once it verified that address: the invitation trusts the mailbox, not
    whoever typed the address at sign-up. Idempotent: the same person accepting again, or
    several times at once, gets the same answer; exactly one of them adds the memberships (a
    conditional UPDATE claims the invitation).
    """
    await throttle(iam, "invitation_accept", ip)
    assert principal.user_id is not None
    now = iam.now()
    token_hashes = iam.secrets.invitation_hashes(token)
    async with iam.db.engine.connect() as conn:
        user = await UserRepository(conn).get(principal.user_id)
        row = await InvitationRepository(conn, None).by_token_hash(*token_hashes)
    if row is None or row["cancelled_at"] is not None:
        raise InvitationInvalid("this invitation link is not valid (unknown or cancelled)")
    if user is None or user["email"] != row["email"]:
        raise PermissionDenied(
            "this invitation was sent to another email address: log in with the invited address to accept it"
        )
    if iam.config.email_verification and user["email_verified_at"] is None:
        raise PermissionDenied("verify your email address before accepting an invitation sent to it")
    if row["accepted_at"] is not None:
        return await _accepted(iam, row, principal.user_id)
    if row["expires_at"] <= now:
        raise InvitationInvalid("this invitation link has expired; ask for a new one")
    org_id = row["organization_id"]
    async with iam.db.transaction() as conn:
        repo = InvitationRepository(conn, None)
        if not await repo.claim(row["id"], principal.user_id, now):
            claimed = None  # accepted or cancelled meanwhile: answered below, from the committed row
        else:
            claimed = row
            orgs = OrganizationRepository(conn)
            if await orgs.member_role(org_id, principal.user_id) is None:
                await orgs.add_member(org_id, principal.user_id, row["role"], now)
            if row["namespace_id"] is not None:
                await NamespaceMemberRepository(conn, row["namespace_id"]).put(
                    principal.user_id, row["namespace_role"], now
                )
            await audit.record(
                iam,
                principal,
                "invitation.accept",
                conn=conn,
                organization_id=org_id,
                namespace_id=row["namespace_id"],
                target_type="invitation",
                target_id=row["id"],
                ip=ip,
                detail={"role": row["role"]},
            )
    if claimed is None:
        async with iam.db.engine.connect() as conn:
            current = await InvitationRepository(conn, None).by_token_hash(*token_hashes)
        if current is None or current["accepted_at"] is None:
            raise InvitationInvalid("this invitation link is not valid (unknown or cancelled)")
        return await _accepted(iam, current, principal.user_id)
    return await _accepted(iam, row, principal.user_id)


async def _accepted(iam: Iam, row: Row, user_id: str) -> OrganizationView:
    """The answer to an accepted invitation: the organization, if this person is the one who accepted it."""
    if row["accepted_by"] is not None and row["accepted_by"] != user_id:
        raise InvitationInvalid("this invitation link was already used")
    async with iam.db.engine.connect() as conn:
        orgs = OrganizationRepository(conn)
        org = await orgs.get(row["organization_id"])
        role = await orgs.member_role(row["organization_id"], user_id)
    if org is None:
        raise InvitationInvalid("the organization of this invitation no longer exists")
    return OrganizationView(id=org["id"], name=org["name"], created_at=org["created_at"], role=role)
