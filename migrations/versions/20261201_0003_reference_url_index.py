"""idx_reference (param, url): a reference search's `OR url = …` branch uses an index.

`Observation?patient=X` matches local targets or the URL as written; without this index the
URL branch of the OR made PostgreSQL read every row of the parameter (all Observations'
patient references: 4 ms at 20 k Observations, growing with the table) instead of two index
probes (0.6 ms). See bench/README.md, "Search plan".

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idx_reference_param_url", "idx_reference", ["param", "url"])


def downgrade() -> None:
    op.drop_index("ix_idx_reference_param_url", table_name="idx_reference")
