"""revocation generation: the counter every revocation bumps (workers' token caches follow it)

Revision ID: a003
Revises: m001
Create Date: 2026-12-07 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a003"
down_revision = "m001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_revocation_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_revocation_generation")),
    )
    op.execute("INSERT INTO auth_revocation_generation (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("auth_revocation_generation")
