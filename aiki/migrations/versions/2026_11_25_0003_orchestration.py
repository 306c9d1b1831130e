"""Orchestration: child workflows, lifecycle actions, execution timeouts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_versions", sa.Column("timeout_ms", sa.BigInteger(), nullable=True))
    op.add_column("runs", sa.Column("parent_address", sa.String(length=300), nullable=True))
    op.add_column("runs", sa.Column("parent_seq", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("timeout_ms", sa.BigInteger(), nullable=True))
    op.add_column("runs", sa.Column("deadline_at", sa.BigInteger(), nullable=True))
    op.add_column("runs", sa.Column("resume_at", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_runs_deadline_at",
        "runs",
        ["deadline_at"],
        unique=False,
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    )
    op.create_index(
        "uq_runs_child_entry",
        "runs",
        ["parent_run_id", "parent_address", "parent_seq"],
        unique=True,
        postgresql_where=sa.text("parent_run_id IS NOT NULL"),
        sqlite_where=sa.text("parent_run_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_runs_child_entry", table_name="runs")
    op.drop_index("ix_runs_deadline_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resume_at")
        batch.drop_column("deadline_at")
        batch.drop_column("timeout_ms")
        batch.drop_column("parent_seq")
        batch.drop_column("parent_address")
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_column("timeout_ms")
