"""PostgreSQL wake-up trigger: no ``run:<id>`` notification for a run being inserted

Nobody can be waiting on a run that does not exist yet (a wait on an unknown run is answered 404),
so the notification only woke the starting process's own result long-poll for a needless read.
A new queued run still announces ``ready:<namespace>``, and a deadline still ``timer``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 05:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION aiki_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'queued') THEN
        PERFORM pg_notify('aiki_wake', 'ready:' || NEW.namespace_id);
    END IF;
    IF {run_changed} THEN
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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION.format(run_changed="TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION.format(run_changed="TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status"))
