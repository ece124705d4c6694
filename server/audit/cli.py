"""`rehabfhir audit verify | checkpoint`: check and sign the audit hash chain from the shell."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click
import orjson


@contextlib.contextmanager
def _session_and_key() -> Iterator[tuple[Any, bytes]]:
    """A session on DATABASE_URL and the audit key; closed (and the engine disposed) afterwards."""
    from server.audit.flask_integration import AuditSettings
    from server.settings import Settings
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    session = make_session_factory(engine)()
    try:
        yield session, AuditSettings.from_env(settings).key
    finally:
        session.close()
        engine.dispose()


@click.group("audit")
def audit() -> None:
    """Audit trail commands."""


@audit.command("verify")
def verify_command() -> None:
    """Verify the hash chain and checkpoints; exit 1 and name the first broken record if altered."""
    from server.audit.verify import verify

    with _session_and_key() as (session, key):
        verdict = verify(session, key)
    click.echo(orjson.dumps(verdict.as_dict()).decode())
    sys.exit(0 if verdict.intact else 1)


@audit.command("checkpoint")
def checkpoint_command() -> None:
    """Sign the current chain head now (e.g. from cron, so a cut tail is detectable)."""
    from server.audit.chain import checkpoint
    from server.store.session import begin_write

    with _session_and_key() as (session, key):
        begin_write(session)
        head = checkpoint(session, key)
        session.commit()
    click.echo("empty chain" if head is None else f"checkpoint at record {head[0]}: {head[1]}")
