"""The schema: one MetaData with a constraint naming convention, valid on PostgreSQL and SQLite.

Timestamps are integer milliseconds since the Unix epoch (UTC) on both databases: no time-zone
conversions, cheap comparisons, and the wire protocol uses the same unit. User payloads (inputs,
outputs, event data) are JSON text stored as received, never decoded by the server on the hot path.
Every tenant-scoped table carries ``namespace_id``.

IAM's tables (people, keys, sessions, ...) are IAM's business: ``aiki.iam.tables`` defines them on
this same ``metadata``, and the migrations environment imports it so Alembic sees the whole schema.
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

# Push targets of a namespace (docs/internals.md, "Push endpoints"). The signing secret is kept
# encrypted under the server secret (``aiki.platform.secret_box``); during a rotation the previous
# one is kept too, until ``previous_secret_expires_at``.
endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("namespace_id", Id, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    # JSON [[workflow, version], ...] and [pool, ...], as a worker's registration keeps them.
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("pools", sa.Text, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("timeout_ms", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("secret_hint", sa.String(32), nullable=False),
    sa.Column("previous_secret", sa.Text, nullable=True),
    sa.Column("previous_secret_expires_at", Ms, nullable=True),
    # The circuit breaker, shared by every server replica: closed, open (until breaker_until), half_open.
    sa.Column("breaker", sa.String(20), nullable=False),
    sa.Column("breaker_until", Ms, nullable=True),
    sa.Column("breaker_opens", sa.Integer, nullable=False),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_delivery_at", Ms, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Index("ix_endpoints_namespace_id_id", "namespace_id", "id"),
)

# One row per POST of an activation to an endpoint: the run detail's deliveries, the endpoint's
# failure rate.
endpoint_deliveries = sa.Table(
    "endpoint_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", Id, nullable=False),
    sa.Column("endpoint_id", Id, sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(30), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_endpoint_deliveries_run_id_id", "run_id", "id"),
    sa.Index("ix_endpoint_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
)

# Tables whose every row belongs to one namespace (checked by an architecture test, with IAM's own).
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
    schedules,
    endpoints,
    endpoint_deliveries,
)
