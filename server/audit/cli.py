"""`rehabfhir audit verify | checkpoint`: check and sign the audit hash chain from the shell."""

from __future__ import annotations

import sys

import click
import orjson


def _session_and_key() -> tuple[object, bytes]:
    from server.audit.flask_integration import AuditSettings
    from server.settings import Settings
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    return make_session_factory(engine)(), AuditSettings.from_env(settings).key


@click.group("audit")
def audit() -> None:
    """Audit trail commands."""


@audit.command("verify")
def verify_command() -> None:
    """Verify the hash chain and checkpoints; exit 1 and name the first broken record if altered."""
    from server.audit.verify import verify

    session, key = _session_and_key()
    verdict = verify(session, key)  # type: ignore[arg-type]
    click.echo(orjson.dumps(verdict.as_dict()).decode())
    sys.exit(0 if verdict.intact else 1)


@audit.command("checkpoint")
def checkpoint_command() -> None:
    """Sign the current chain head now (e.g. from cron, so a cut tail is detectable)."""
    from server.audit.chain import checkpoint
    from server.store.session import begin_write

    session, key = _session_and_key()
    begin_write(session)  # type: ignore[arg-type]
    head = checkpoint(session, key)  # type: ignore[arg-type]
    session.commit()  # type: ignore[attr-defined]
    click.echo("empty chain" if head is None else f"checkpoint at record {head[0]}: {head[1]}")
