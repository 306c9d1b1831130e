"""IAM's tables: people, memberships, keys, sessions, audit, rate limits, pending logins.

They live on the core's one ``metadata`` (``aiki.platform.db.tables``), so a single Alembic history
covers both; the migrations environment imports this module so autogenerate sees them. Tenancy roots
and people are global; keys and namespace memberships belong to one namespace.
"""

from __future__ import annotations

import sqlalchemy as sa

from aiki.platform.db.tables import Id, Ms, metadata

__all__ = [
    "IAM_GLOBAL_TABLES",
    "IAM_TENANT_TABLES",
    "api_keys",
    "audit_log",
    "email_tokens",
    "identities",
    "invitations",
    "metadata",
    "namespace_members",
    "oidc_logins",
    "organization_members",
    "rate_limits",
    "sessions",
    "users",
]


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True),
    # Lower-cased. NULL for a user known only through an OIDC identity that gave no email.
    sa.Column("email", sa.String(320), nullable=True),
    # argon2id in PHC format; NULL when the user signs in only through OIDC.
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    # When the person proved they read mail at `email` (a link we sent, or a provider that verified
    # it). NULL: unverified; such an account only sees "verify your email" (aiki.iam.verification).
    sa.Column("email_verified_at", Ms, nullable=True),
    sa.UniqueConstraint("email"),
)

# External identities (OIDC): a user is found by `(issuer, subject)`, never by email alone.
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("issuer", sa.String(500), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("email_verified", sa.Boolean, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("issuer", "subject"),
    sa.Index("ix_identities_user_id", "user_id"),
)

organization_members = sa.Table(
    "organization_members",
    metadata,
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_organization_members_user_id", "user_id"),
)

namespace_members = sa.Table(
    "namespace_members",
    metadata,
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_namespace_members_user_id", "user_id"),
)

invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    # Optionally also grants a role in one namespace of the organization.
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=True),
    sa.Column("namespace_role", sa.String(20), nullable=True),
    # HMAC of the link's token under the server secret: the token itself is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("invited_by", Id, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("expires_at", Ms, nullable=False),
    sa.Column("accepted_at", Ms, nullable=True),
    sa.Column("accepted_by", Id, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("cancelled_at", Ms, nullable=True),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_invitations_organization_id_created_at", "organization_id", "created_at"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("last_seen_at", Ms, nullable=False),
    # Absolute expiry; the idle expiry is `last_seen_at` plus the configured idle time.
    sa.Column("expires_at", Ms, nullable=False),
    sa.Column("revoked_at", Ms, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
    sa.Index("ix_sessions_user_id", "user_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # The `<id>` part of `aiki_<id>_<secret><checksum>`: public, and how a key is looked up.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    # HMAC-SHA256 of the whole key under the server secret (hex); the key itself is never stored.
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("expires_at", Ms, nullable=True),
    sa.Column("revoked_at", Ms, nullable=True),
    sa.Column("last_used_at", Ms, nullable=True),
    sa.Index("ix_api_keys_namespace_id_created_at", "namespace_id", "created_at"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("organization_id", Id, nullable=True),
    sa.Column("namespace_id", Id, nullable=True),
    sa.Column("actor_type", sa.String(20), nullable=False),
    sa.Column("actor_id", sa.String(64), nullable=True),
    sa.Column("actor_label", sa.String(320), nullable=True),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("target_type", sa.String(40), nullable=True),
    sa.Column("target_id", sa.String(320), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_audit_log_organization_id_id", "organization_id", "id"),
)

# Fixed-window counters shared by every replica: login attempts per account and per IP, requests per key.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("window_start", Ms, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
)

email_tokens = sa.Table(
    "email_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # "verify" (email verification) or "password_reset".
    sa.Column("purpose", sa.String(20), nullable=False),
    # HMAC of the mailed link's token under the server secret: the token itself is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False),
    # A repeated sign-up of a still-unverified address: the password it chose, set when ITS link is
    # followed (argon2id, like users.password_hash). NULL for other tokens.
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("expires_at", Ms, nullable=False),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_email_tokens_user_id_purpose", "user_id", "purpose"),
)

# OIDC logins in progress (``aiki.iam.oidc_pending.PendingLogin``), bound to the browser that started them:
# `browser_hash` is the HMAC of a random pre-login cookie, so only that browser can finish the login,
# and a row is deleted when its callback arrives (single use). Rows past their TTL are purged.
oidc_logins = sa.Table(
    "oidc_logins",
    metadata,
    sa.Column("browser_hash", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(128), primary_key=True),
    sa.Column("pending", sa.Text, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_oidc_logins_created_at", "created_at"),
)

# IAM's tables whose every row belongs to one namespace (with the core's ``TENANT_TABLES``).
IAM_TENANT_TABLES: tuple[sa.Table, ...] = (namespace_members, api_keys)

# Global (not namespace-scoped) IAM tables.
IAM_GLOBAL_TABLES: tuple[sa.Table, ...] = (
    users,
    identities,
    organization_members,
    invitations,
    sessions,
    audit_log,
    rate_limits,
    oidc_logins,
    email_tokens,
)
