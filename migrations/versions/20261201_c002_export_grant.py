"""export_job: the kick-off grant (scopes) and the `patient` parameter of each job

Revision ID: c002
Revises: c001
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c002"
down_revision = "c001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs queued before this revision keep NULL scopes: the worker fails them (kick off again)
    # rather than export under a grant it does not know.
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grant_scopes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("patients", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.drop_column("patients")
        batch_op.drop_column("grant_scopes")
