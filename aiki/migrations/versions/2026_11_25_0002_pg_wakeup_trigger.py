"""PostgreSQL wake-up trigger: NOTIFY aiki_wake when a run becomes ready, changes status or gets a deadline

Cross-process wake-ups ride on the transaction that changes the run, at no extra round trip.
SQLite serves one process, which wakes its waiters directly, so it gets no trigger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION aiki_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'queued' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'queued') THEN
                PERFORM pg_notify('aiki_wake', 'ready:' || NEW.namespace_id);
            END IF;
            IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
                PERFORM pg_notify('aiki_wake', 'run:' || NEW.id);
            END IF;
            IF NEW.wake_at IS NOT NULL AND NEW.status <> 'running'
               AND (TG_OP = 'INSERT' OR OLD.wake_at IS DISTINCT FROM NEW.wake_at) THEN
                PERFORM pg_notify('aiki_wake', 'timer');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER runs_notify AFTER INSERT OR UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION aiki_notify_run()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS runs_notify ON runs")
    op.execute("DROP FUNCTION IF EXISTS aiki_notify_run()")
