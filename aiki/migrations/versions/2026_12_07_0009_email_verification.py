"""Email verification and password reset: users.email_verified_at, and the email_tokens table

Existing accounts: those that sign in only through an OpenID provider (no password) and those whose
email a provider identity asserted as verified are marked verified (at their creation time); every
other password account starts unverified and verifies at its next login (the dashboard and the API
then offer only "verify your email", with a button that mails a fresh link).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified_at", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE users SET email_verified_at = created_at WHERE password_hash IS NULL OR EXISTS ("
        "SELECT 1 FROM identities WHERE identities.user_id = users.id AND identities.email_verified "
        "AND lower(identities.email) = users.email)"
    )
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
    )
    op.create_index("ix_email_tokens_user_id_purpose", "email_tokens", ["user_id", "purpose"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_email_tokens_user_id_purpose", table_name="email_tokens")
    op.drop_table("email_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
