"""IAM: users, organizations, namespaces, roles, API keys, sessions, audit

Reserved in the migration chain so parallel work can land in any order; filled by its feature.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
