"""Audit: keyed chain (key_id on records and checkpoints) and append-only guards on both backends.

PostgreSQL: row triggers refuse UPDATE and DELETE (b001) and now a statement trigger refuses
TRUNCATE on audit_event and audit_checkpoint. SQLite: BEFORE UPDATE / DELETE triggers abort.
They stop accidents and casual edits; the key and the witness file stop an insider.

Revision ID: b002
Revises: b001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b002"
down_revision = "b001"
branch_labels = None
depends_on = None

_TABLES = ("audit_event", "audit_checkpoint")


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32), nullable=True))
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32), nullable=True))
    op.create_index("ix_audit_checkpoint_event_pk", "audit_checkpoint", ["event_pk"])
    if op.get_bind().dialect.name == "postgresql":
        # audit_append_only() comes from b001; it raises for row and statement triggers alike.
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
            )
        return
    for table in _TABLES:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'audit records are append-only ({event} on {table})'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    else:
        for table in _TABLES:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
    op.drop_index("ix_audit_checkpoint_event_pk", table_name="audit_checkpoint")
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("key_id")
