"""Schedules: cron and interval rules that start runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("namespace_id", sa.String(length=36), nullable=False),
        sa.Column("identity", sa.String(length=300), nullable=False),
        sa.Column("reference_id", sa.String(length=256), nullable=True),
        sa.Column("definition_hash", sa.String(length=64), nullable=False),
        sa.Column("workflow_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("every_ms", sa.BigInteger(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("overlap", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("next_fire_at", sa.BigInteger(), nullable=True),
        sa.Column("last_fire_at", sa.BigInteger(), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespaces.id"],
            name=op.f("fk_schedules_namespace_id_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("namespace_id", "identity", name=op.f("uq_schedules_namespace_id_identity")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_namespace_id_id", ["namespace_id", "id"], unique=False)
        batch_op.create_index(
            "ix_schedules_next_fire_at",
            ["next_fire_at"],
            unique=False,
            postgresql_where=sa.text("next_fire_at IS NOT NULL"),
            sqlite_where=sa.text("next_fire_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_schedules_next_fire_at",
            postgresql_where=sa.text("next_fire_at IS NOT NULL"),
            sqlite_where=sa.text("next_fire_at IS NOT NULL"),
        )
        batch_op.drop_index("ix_schedules_namespace_id_id")
    op.drop_table("schedules")
