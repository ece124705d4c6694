"""Run Alembic migrations programmatically (first start, `rehabfhir db upgrade`, tests)."""

from __future__ import annotations

import pathlib

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """Alembic config pointing at the packaged migrations directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "heads") -> None:
    """Upgrade the database behind the engine to `revision` (default: every branch head).

    Under the startup lock: two hosts starting at once do not both create the tables.
    """
    from server.store.session import startup_lock

    cfg = alembic_config()
    with startup_lock(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


_script_heads: frozenset[str] | None = None


def missing_heads(engine: sa.Engine) -> list[str]:
    """Return the migration heads the database has not reached (empty: at head)."""
    global _script_heads
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    if _script_heads is None:  # the packaged scripts do not change while the process runs
        _script_heads = frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return sorted(_script_heads - current)
