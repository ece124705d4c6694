"""subscription_state.ends: Subscription.end, after which no event is recorded and it is turned off

Revision ID: s002
Revises: s001
Create Date: 2026-12-07 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s002"
down_revision = "s001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ends", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.drop_column("ends")
