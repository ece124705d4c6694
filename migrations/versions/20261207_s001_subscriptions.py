"""subscription_state and subscription_event: topic-based Subscriptions' state and outbox

Revision ID: s001
Revises: a003
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s001"
down_revision = "a003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("filters", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("content", sa.String(length=16), nullable=False),
        sa.Column("heartbeat", sa.Integer(), nullable=True),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("max_count", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=True),
        sa.Column("grant_scopes", sa.Text(), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.DateTime(), nullable=True),
        sa.Column("last_sent", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_due", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_state")),
    )
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.create_index("ix_subscription_state_topic_status", ["topic", "status"], unique=False)
    op.create_table(
        "subscription_event",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("focus_type", sa.String(length=64), nullable=False),
        sa.Column("focus_id", sa.String(length=64), nullable=False),
        sa.Column("focus_version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subscription_event")),
        sa.UniqueConstraint("subscription_id", "number", name=op.f("uq_subscription_event_subscription_id")),
    )


def downgrade() -> None:
    op.drop_table("subscription_event")
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_state_topic_status")
    op.drop_table("subscription_state")
