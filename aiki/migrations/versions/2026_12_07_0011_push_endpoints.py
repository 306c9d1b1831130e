"""Push endpoints: the ``endpoints`` a namespace registers and the ``endpoint_deliveries`` made to them

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Id = sa.String(36)
Ms = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", Id, nullable=False),
        sa.Column("namespace_id", Id, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("pools", sa.Text, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("timeout_ms", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("secret_hint", sa.String(32), nullable=False),
        sa.Column("previous_secret", sa.Text, nullable=True),
        sa.Column("previous_secret_expires_at", Ms, nullable=True),
        sa.Column("breaker", sa.String(20), nullable=False),
        sa.Column("breaker_until", Ms, nullable=True),
        sa.Column("breaker_opens", sa.Integer, nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_delivery_at", Ms, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", Ms, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
        sa.ForeignKeyConstraint(
            ["namespace_id"], ["namespaces.id"], name=op.f("fk_endpoints_namespace_id_namespaces"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_endpoints_namespace_id_id", "endpoints", ["namespace_id", "id"])
    op.create_table(
        "endpoint_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("namespace_id", Id, nullable=False),
        sa.Column("endpoint_id", Id, nullable=False),
        sa.Column("run_id", Id, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(30), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_deliveries")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_deliveries_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_endpoint_deliveries_run_id_runs"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_endpoint_deliveries_run_id_id", "endpoint_deliveries", ["run_id", "id"])
    op.create_index(
        "ix_endpoint_deliveries_endpoint_id_created_at", "endpoint_deliveries", ["endpoint_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("endpoint_deliveries")
    op.drop_table("endpoints")
