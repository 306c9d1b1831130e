"""Schedules keep the start options of the runs they start: workflow retry policy and pool

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("retry", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pool", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("pool")
        batch.drop_column("retry")
