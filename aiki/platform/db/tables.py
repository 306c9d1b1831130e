"""The schema: one MetaData with a constraint naming convention, valid on PostgreSQL and SQLite.

Timestamps are integer milliseconds since the Unix epoch (UTC) on both databases: no time-zone
conversions, cheap comparisons, and the wire protocol uses the same unit. User payloads (inputs,
outputs, event data) are JSON text stored as received, never decoded by the server on the hot path.
Every tenant-scoped table carries ``namespace_id``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = sa.String(36)
Ms = sa.BigInteger


organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
)

namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("organization_id", "name"),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("namespace_id", "name"),
)

workflow_versions = sa.Table(
    "workflow_versions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("workflow_id", Id, sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("workflow_name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    # JSON Schemas the serving worker declared; NULL means "any JSON".
    sa.Column("input_schema", sa.Text, nullable=True),
    sa.Column("event_schemas", sa.Text, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    # Execution time limit of the version's runs (wall-clock from the first claim); NULL: none.
    sa.Column("timeout_ms", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("namespace_id", "workflow_name", "version"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("workflow_name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    # Fencing token: bumped by every claim, cancel and recovery; every executor write names it.
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("recoveries", sa.Integer, nullable=False),
    sa.Column("max_recoveries", sa.Integer, nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("input_hash", sa.String(64), nullable=True),
    sa.Column("output", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("reference_id", sa.String(256), nullable=True),
    sa.Column("parent_run_id", Id, nullable=True),
    sa.Column("pool", sa.String(100), nullable=True),
    sa.Column("retry", sa.Text, nullable=True),
    # The one deadline the timer loop watches; its meaning depends on the status (docs/internals.md).
    sa.Column("wake_at", Ms, nullable=True),
    sa.Column("queued_at", Ms, nullable=True),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    # The event wait a run in `awaiting_event` is suspended on.
    sa.Column("wait_event", sa.String(200), nullable=True),
    sa.Column("wait_seq", sa.Integer, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("started_at", Ms, nullable=True),
    sa.Column("finished_at", Ms, nullable=True),
    # A child run is entry `parent_seq` at `parent_address` of its parent's replay (memoized like a task).
    sa.Column("parent_address", sa.String(300), nullable=True),
    sa.Column("parent_seq", sa.Integer, nullable=True),
    # The version's execution time limit, copied at start; the first claim turns it into `deadline_at`.
    sa.Column("timeout_ms", sa.BigInteger, nullable=True),
    # The execution deadline the timer loop enforces in every live status (cause `timeout`).
    sa.Column("deadline_at", Ms, nullable=True),
    # A paused delayed start: when it should start once resumed.
    sa.Column("resume_at", Ms, nullable=True),
    sa.UniqueConstraint("namespace_id", "workflow_name", "version", "reference_id"),
    # The ready queue: claimers read only queued rows, oldest first.
    sa.Index(
        "ix_runs_ready",
        "namespace_id",
        "workflow_name",
        "version",
        "queued_at",
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    ),
    sa.Index(
        "ix_runs_wake_at",
        "wake_at",
        postgresql_where=sa.text("wake_at IS NOT NULL"),
        sqlite_where=sa.text("wake_at IS NOT NULL"),
    ),
    sa.Index("ix_runs_namespace_id_id", "namespace_id", "id"),
    sa.Index("ix_runs_parent_run_id", "parent_run_id"),
    # Run lists, newest first, by status or by workflow version (and the catalogue's counts).
    sa.Index("ix_runs_namespace_id_status_id", "namespace_id", "status", "id"),
    sa.Index("ix_runs_namespace_id_workflow_name_version_id", "namespace_id", "workflow_name", "version", "id"),
    sa.Index(
        "ix_runs_deadline_at",
        "deadline_at",
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    ),
    # One child per (parent, address, seq): replaying a parent never starts a second one.
    sa.Index(
        "uq_runs_child_entry",
        "parent_run_id",
        "parent_address",
        "parent_seq",
        unique=True,
        postgresql_where=sa.text("parent_run_id IS NOT NULL"),
        sqlite_where=sa.text("parent_run_id IS NOT NULL"),
    ),
)

run_history = sa.Table(
    "run_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_run_history_run_id_id", "run_id", "id"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("address", sa.String(300), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("output", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("next_attempt_at", Ms, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    # A task result is recorded at most once per (run, address, seq); discarded entries (from a
    # failed workflow attempt) step aside so the next attempt can record its own.
    sa.Index(
        "uq_tasks_live_entry",
        "run_id",
        "address",
        "seq",
        unique=True,
        postgresql_where=sa.text("status <> 'discarded'"),
        sqlite_where=sa.text("status <> 'discarded'"),
    ),
    # The run detail lists discarded entries too; only they are indexed here, so the hot path's
    # writes of live entries do not pay for it.
    sa.Index(
        "ix_tasks_discarded",
        "run_id",
        postgresql_where=sa.text("status = 'discarded'"),
        sqlite_where=sa.text("status = 'discarded'"),
    ),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("reference_id", sa.String(256), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("run_id", "name", "seq"),
    sa.UniqueConstraint("run_id", "name", "reference_id"),
)

sleeps = sa.Table(
    "sleeps",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("wake_at", Ms, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("run_id", "name", "seq"),
)

wait_timeouts = sa.Table(
    "wait_timeouts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("run_id", "name", "seq"),
)

# A worker's id is its own choice (stable across restarts), so it is unique only within its
# namespace: one tenant's ids never collide with, reveal or shadow another's.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(100), nullable=False),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("pools", sa.Text, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("started_at", Ms, nullable=False),
    sa.Column("last_heartbeat_at", Ms, nullable=False),
    sa.PrimaryKeyConstraint("namespace_id", "id"),
    sa.Index("ix_workers_namespace_id_last_heartbeat_at", "namespace_id", "last_heartbeat_at"),
)

# Tables whose every row belongs to one namespace (checked by an architecture test).
TENANT_TABLES: tuple[sa.Table, ...] = (
    workflows,
    workflow_versions,
    runs,
    run_history,
    tasks,
    events,
    sleeps,
    wait_timeouts,
    workers,
)

DEFAULT_ORGANIZATION_ID = "00000000-0000-7000-8000-000000000000"
DEFAULT_NAMESPACE_ID = "00000000-0000-7000-8000-000000000001"


schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    # What makes two activations the same schedule: "ref:<reference id>" or "def:<definition hash>".
    sa.Column("identity", sa.String(300), nullable=False),
    sa.Column("reference_id", sa.String(256), nullable=True),
    sa.Column("definition_hash", sa.String(64), nullable=False),
    sa.Column("workflow_name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("input_hash", sa.String(64), nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("every_ms", Ms, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("overlap", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    # The next occurrence not yet handled; NULL while paused. The schedule loop watches it.
    sa.Column("next_fire_at", Ms, nullable=True),
    sa.Column("last_fire_at", Ms, nullable=True),
    sa.Column("last_run_id", Id, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    # Start options of every run the schedule starts (as the runs' own columns hold them).
    sa.Column("retry", sa.Text, nullable=True),
    sa.Column("pool", sa.String(100), nullable=True),
    sa.UniqueConstraint("namespace_id", "identity"),
    sa.Index(
        "ix_schedules_next_fire_at",
        "next_fire_at",
        postgresql_where=sa.text("next_fire_at IS NOT NULL"),
        sqlite_where=sa.text("next_fire_at IS NOT NULL"),
    ),
    sa.Index("ix_schedules_namespace_id_id", "namespace_id", "id"),
)

TENANT_TABLES = (*TENANT_TABLES, schedules)

# -- IAM: people, memberships, keys, sessions, audit, rate limits ----------------------------------
# Tenancy roots and people are global; keys and namespace memberships belong to one namespace.

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

# OIDC logins in progress (``aiki.iam.oidc.PendingLogin``), bound to the browser that started them:
# `browser_hash` is the HMAC of a random pre-login cookie, so only that browser can finish the login,
# and a row is deleted when its callback arrives (single use). Rows past their TTL are purged.
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

oidc_logins = sa.Table(
    "oidc_logins",
    metadata,
    sa.Column("browser_hash", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(128), primary_key=True),
    sa.Column("pending", sa.Text, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_oidc_logins_created_at", "created_at"),
)

TENANT_TABLES += (namespace_members, api_keys)

# Global (not namespace-scoped) IAM tables.
IAM_GLOBAL_TABLES = (
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
