"""PostgreSQL: text_pattern_ops on the string and uri indexes (prefix LIKE uses them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
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
    op.drop_index("ix_idx_string_param_norm", table_name="idx_string")
    op.create_index(
        "ix_idx_string_param_norm",
        "idx_string",
        ["param", "norm"],
        postgresql_ops={"norm": "text_pattern_ops"},
    )
    op.drop_index("ix_idx_uri_param_uri", table_name="idx_uri")
    op.create_index(
        "ix_idx_uri_param_uri", "idx_uri", ["param", "uri"], postgresql_ops={"uri": "text_pattern_ops"}
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_idx_uri_param_uri", table_name="idx_uri")
    op.create_index("ix_idx_uri_param_uri", "idx_uri", ["param", "uri"])
    op.drop_index("ix_idx_string_param_norm", table_name="idx_string")
    op.create_index("ix_idx_string_param_norm", "idx_string", ["param", "norm"])
