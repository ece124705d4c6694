"""Run Alembic migrations programmatically (first start, `rehabfhir db upgrade`, tests)."""

from __future__ import annotations

import ast
import pathlib
import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent.parent / "migrations"
# `revision = "a004"` and `down_revision = "s002"` (or a tuple, or None) in each script.
_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+)$", re.M)


def alembic_config(url: str | None = None) -> Config:
    """Alembic config pointing at the packaged migrations directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "heads") -> None:
    """Upgrade the database behind the engine to `revision` (default: every branch head).

    Under the startup lock: two hosts starting at once do not both create the tables. A database
    already at every head is left alone without loading Alembic (each gunicorn worker starts
    here; Alembic, Mako and Pygments cost ~9 MB of a worker's memory).
    """
    from server.store.session import startup_lock

    if revision == "heads" and not missing_heads(engine):
        return
    from alembic import command

    cfg = alembic_config()
    with startup_lock(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


_script_heads: frozenset[str] | None = None


def script_heads() -> frozenset[str]:
    """The revisions no packaged script revises, read from the scripts' text (Alembic not loaded).

    tests/unit/store/test_migrations.py checks this equals Alembic's own answer.
    """
    global _script_heads
    if _script_heads is None:  # the packaged scripts do not change while the process runs
        revisions: set[str] = set()
        revised: set[str] = set()
        for path in (MIGRATIONS / "versions").glob("*.py"):
            for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
                parsed = ast.literal_eval(value.strip())
                if name == "revision":
                    revisions.add(parsed)
                elif parsed is not None:
                    revised.update((parsed,) if isinstance(parsed, str) else parsed)
        _script_heads = frozenset(revisions - revised)
    return _script_heads


def missing_heads(engine: sa.Engine) -> list[str]:
    """Return the migration heads the database has not reached (empty: at head)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return sorted(script_heads())
        current = set(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    return sorted(script_heads() - current)
