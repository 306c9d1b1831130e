"""Worker ids are unique per namespace: the primary key of ``workers`` becomes (namespace_id, id)

A worker chooses its own id, so with a global key one tenant could learn another's ids (a taken
id behaved differently) and shadow another tenant's worker by registering its id first. Existing
rows keep their ids: unique globally, they are unique per namespace too.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite cannot alter a primary key: batch mode copies the table (rows included) into a new one.
    with op.batch_alter_table("workers", recreate="auto") as batch:
        batch.drop_constraint("pk_workers", type_="primary")
        batch.create_primary_key("pk_workers", ["namespace_id", "id"])


def downgrade() -> None:
    # Back to one worker per id: of the namespaces sharing an id, keep the row heard from last
    # (a worker registers again at its next start anyway).
    op.execute(
        sa.text(
            "DELETE FROM workers WHERE EXISTS (SELECT 1 FROM workers AS other WHERE other.id = workers.id "
            "AND (other.last_heartbeat_at > workers.last_heartbeat_at OR (other.last_heartbeat_at = "
            "workers.last_heartbeat_at AND other.namespace_id > workers.namespace_id)))"
        )
    )
    with op.batch_alter_table("workers", recreate="auto") as batch:
        batch.drop_constraint("pk_workers", type_="primary")
        batch.create_primary_key("pk_workers", ["id"])
