"""Audit trail: audit_event (hash chain) and audit_checkpoint; PostgreSQL refuses UPDATE/DELETE on both.

Revision ID: b001
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b001"
down_revision = "0001"
branch_labels = None
depends_on = None

BigIntPk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Append-only: row-level UPDATE and DELETE raise. TRUNCATE is not a row event, so test
# fixtures can still empty the tables; the app role should not hold TRUNCATE (see README).
_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("pk", BigIntPk, autoincrement=True, nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("client", sa.String(256), nullable=True),
        sa.Column("patient", sa.String(128), nullable=True),
        sa.Column("action", sa.String(1), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subtype", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(256), nullable=True),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_event_hash")),
    )
    op.create_index("ix_audit_event_recorded", "audit_event", ["recorded"])
    op.create_index("ix_audit_event_patient_recorded", "audit_event", ["patient", "recorded"])
    op.create_index("ix_audit_event_actor_recorded", "audit_event", ["actor", "recorded"])
    op.create_index("ix_audit_event_resource", "audit_event", ["resource"])
    op.create_table(
        "audit_checkpoint",
        sa.Column("pk", BigIntPk, autoincrement=True, nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_checkpoint")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)
        for table in ("audit_event", "audit_checkpoint"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_event", "audit_checkpoint"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    op.drop_table("audit_checkpoint")
    op.drop_index("ix_audit_event_resource", table_name="audit_event")
    op.drop_index("ix_audit_event_actor_recorded", table_name="audit_event")
    op.drop_index("ix_audit_event_patient_recorded", table_name="audit_event")
    op.drop_index("ix_audit_event_recorded", table_name="audit_event")
    op.drop_table("audit_event")
