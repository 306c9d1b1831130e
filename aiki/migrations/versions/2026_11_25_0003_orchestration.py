"""Orchestration: child workflows, lifecycle actions, execution timeouts

Reserved in the migration chain so parallel work can land in any order; filled by its feature.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
