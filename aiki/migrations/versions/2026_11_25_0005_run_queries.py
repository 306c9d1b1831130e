"""Run queries and workers: indexes for run lists and details, the worker's pid

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
    op.create_index("ix_runs_namespace_id_status_id", "runs", ["namespace_id", "status", "id"])
    op.create_index(
        "ix_runs_namespace_id_workflow_name_version_id", "runs", ["namespace_id", "workflow_name", "version", "id"]
    )
    op.create_index(
        "ix_tasks_discarded",
        "tasks",
        ["run_id"],
        postgresql_where=sa.text("status = 'discarded'"),
        sqlite_where=sa.text("status = 'discarded'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_discarded", table_name="tasks")
    op.drop_index("ix_runs_namespace_id_workflow_name_version_id", table_name="runs")
    op.drop_index("ix_runs_namespace_id_status_id", table_name="runs")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("pid")
