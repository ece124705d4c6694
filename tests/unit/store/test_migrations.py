"""Alembic owns the schema: upgrade heads on an empty database, then autogenerate finds no diff."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.store.base import Base
from server.store.migrate import upgrade
from server.store.session import make_engine
from tests.conftest import fresh_postgres


def _diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        return list(compare_metadata(ctx, Base.metadata))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_then_no_autogenerate_diff(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/m.db")
        upgrade(engine)
        assert _diff(engine) == []
        engine.dispose()
        return
    with fresh_postgres() as url:
        engine = make_engine(url)
        upgrade(engine)
        diff = _diff(engine)
        engine.dispose()
    assert diff == []


def test_the_history_has_one_head() -> None:
    from alembic.script import ScriptDirectory

    from server.store.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["s003"], "a new revision must revise the single head, not branch off"


def test_heads_read_from_the_scripts_equal_alembics() -> None:
    from alembic.script import ScriptDirectory

    from server.store.migrate import alembic_config
    from server.store.migrate import script_heads

    assert script_heads() == frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_a_database_at_head_starts_without_loading_alembic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    engine = make_engine(f"sqlite:///{tmp_path}/m.db")
    upgrade(engine)
    engine.dispose()
    code = (
        "import sys; from server.store.migrate import upgrade, missing_heads;"
        "from server.store.session import make_engine;"
        f"e = make_engine('sqlite:///{tmp_path}/m.db'); upgrade(e); assert missing_heads(e) == [];"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako', 'pygments')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_upgrade_head_reaches_the_one_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/m.db")
    upgrade(engine, "head")  # singular: fails with "Multiple head revisions" on a branched history
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == ("s003",)
    engine.dispose()
