"""merge heads: resources (0003), auth (a002), audit (b002) and export (c002) in one line again

Revision ID: m001
Revises: 0003, a002, b002, c002
Create Date: 2026-12-01 12:00:00.000000

Each area grew its own branch from the base; from here on a new revision revises m001 (or the
single head after it), so `alembic heads` names one revision and `upgrade head` works.
"""

from __future__ import annotations

revision = "m001"
down_revision = ("0003", "a002", "b002", "c002")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: this revision only joins the branches."""


def downgrade() -> None:
    """Nothing to change: downgrading splits the history into its branches again."""
