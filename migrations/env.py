"""Alembic environment: migrates server.store's metadata on the configured database."""

from __future__ import annotations

from alembic import context

from auth import models as auth_models  # noqa: F401  (registers the auth_* tables)
from server.audit import models as audit_models  # noqa: F401  (registers the audit_* tables)
from server.settings import Settings
from server.store import index_models  # noqa: F401  (registers the idx_* tables)
from server.store import jobs  # noqa: F401  (registers the export_job table)
from server.store import subscriptions  # noqa: F401  (registers the subscription_* tables)
from server.store.base import Base
from server.store.session import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run with the connection handed in, or one from Settings / sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
