"""`rehabfhir audit verify | head`: check the audit trail, and print its signed head, from the shell."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click
import orjson


@contextlib.contextmanager
def _session_and_config() -> Iterator[tuple[Any, Any]]:
    """A session on DATABASE_URL and the AuditSettings; closed (and the engine disposed) afterwards."""
    from server.audit.flask_integration import AuditSettings
    from server.settings import Settings
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    session = make_session_factory(engine)()
    try:
        yield session, AuditSettings.from_settings(settings)
    finally:
        session.close()
        engine.dispose()


@click.group("audit")
def audit() -> None:
    """Audit trail commands."""


@audit.command("verify")
@click.option(
    "--witness",
    "witness",
    type=click.Path(dir_okay=False),
    help="Witness file of signed heads (default: REHABFHIR_AUDIT_WITNESS, or next to the database).",
)
@click.option(
    "--head",
    "heads",
    multiple=True,
    help="A signed head kept elsewhere (the JSON `rehabfhir audit head` printed); repeatable.",
)
def verify_command(witness: str | None, heads: tuple[str, ...]) -> None:
    """Verify the trail against its key and witness; exit 1 and name the first problem if any."""
    from server.audit.chain import Head
    from server.audit.verify import verify
    from server.audit.witness import read_heads

    try:
        given = [Head.parse(h) for h in heads]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--head") from None
    with _session_and_config() as (session, cfg):
        path = witness or cfg.witness_path
        verdict = verify(session, cfg.keyring, [*read_heads(path), *given], cfg.grace)
    click.echo(orjson.dumps({**verdict.as_dict(), "witness": path}).decode())
    sys.exit(0 if verdict.intact else 1)


@audit.command("head")
def head_command() -> None:
    """Print the newest signed head (sequence number, link, time, key id, signature) as JSON."""
    from server.audit.chain import latest_head

    with _session_and_config() as (session, _cfg):
        head = latest_head(session)
    if head is None:
        click.echo("no signed head yet", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(head.as_dict()).decode())
