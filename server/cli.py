"""The `rehabfhir` command line."""

from __future__ import annotations

import dataclasses
import logging

import click
from flask.cli import FlaskGroup

from server import create_app
from server.settings import Settings


def _app() -> object:
    return create_app(Settings.from_env())


@click.group(cls=FlaskGroup, create_app=_app, add_default_commands=False)
def cli() -> None:
    """Rehab FHIR backend: serve FHIR R4B and manage its database."""


# serve and db upgrade build no app before migrating (FlaskGroup's commands would by default):
# with REHABFHIR_AUTO_MIGRATE=false, as in the Docker image, that app fails on an empty database.
@cli.command(with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=8, show_default=True, type=int, help="threads per worker")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the FHIR API (migrating the database first) under gunicorn."""
    from server.store.migrate import upgrade
    from server.store.session import make_engine

    settings = serve_settings(Settings.from_env(), host, port)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    base = settings.public_base_url
    lines = (
        f"rehabfhir serving FHIR R4B at {base}/ on {engine.url.render_as_string()}",
        f"pages: {base}/app/ (sign in with a `rehabfhir user add` account)",
    )
    if settings.log_format == "json":  # one JSON object per line, as the app and gunicorn log
        from server.api.ops_routes import JsonFormatter

        formatter = JsonFormatter()
        for line in lines:
            record = logging.LogRecord("rehabfhir.serve", logging.INFO, __file__, 0, line, None, None)
            click.echo(formatter.format(record), err=True)
    else:
        for line in lines:
            click.echo(line)
    run_gunicorn(f"{host}:{port}", workers, threads, settings)


def serve_settings(settings: Settings, host: str, port: int) -> Settings:
    """Settings whose public base URL is REHABFHIR_BASE_URL, else http://HOST:PORT (wildcard: localhost)."""
    if settings.base_url:
        return settings
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:  # an IPv6 literal
        shown = f"[{shown}]"
    return dataclasses.replace(settings, base_url=f"http://{shown}:{port}")


def gunicorn_logger_class(settings: Settings) -> type:
    """gunicorn's logger for these settings: its error log (start-up, workers, signals) in the app's format.

    With REHABFHIR_LOG_FORMAT=json each of gunicorn's lines is one JSON object on stderr, with the
    app's fields (time, level, logger "gunicorn.error", message, exception), like the app's own
    lines. A logger class, not `logconfig_dict`: with a log config gunicorn builds an access-log
    line for every request even when no access log is kept, and the app logs each request itself.
    """
    from gunicorn import glogging

    from server.api.ops_routes import JsonFormatter

    json_lines = settings.log_format == "json"

    class Logger(glogging.Logger):  # type: ignore[misc]
        def setup(self, cfg: object) -> None:
            super().setup(cfg)
            if json_lines:
                for handler in self.error_log.handlers:
                    handler.setFormatter(JsonFormatter())

    return Logger


def run_gunicorn(bind: str, workers: int, threads: int, settings: Settings | None = None) -> None:
    """Run the app under gunicorn with the gthread worker (settings: from the environment if None)."""
    from gunicorn.app.base import BaseApplication

    settings = settings or Settings.from_env()

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "accesslog": None,  # the app logs each request (JSON, without query strings)
                "logger_class": gunicorn_logger_class(settings),
                "loglevel": settings.log_level.lower(),
                "timeout": 120,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return create_app(settings)

    _App().run()


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade", with_appcontext=False)
@click.option("--revision", default="heads", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations on DATABASE_URL."""
    from server.store.migrate import upgrade
    from server.store.session import make_engine

    engine = make_engine(Settings.from_env().database_url)
    upgrade(engine, revision)
    click.echo(f"database at {revision}")


@db.command("reindex")
@click.option("--type", "resource_type", default=None, help="only this resource type")
def db_reindex(resource_type: str | None) -> None:
    """Rebuild every search index row and compartment membership, with a progress bar."""
    from server.store.reindex import reindex
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    engine = make_engine(Settings.from_env().database_url)
    with make_session_factory(engine)() as session:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = click.progressbar(length=total, label="reindexing", show_pos=True)
                bar.__enter__()
            bar.update(done - bar.pos)

        done = reindex(session, progress, resource_type=resource_type)
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"reindexed {done} resources")


@cli.group()
def ig() -> None:
    """Implementation Guide packages: their profiles are enforced on resources claiming them."""


@ig.command("install", with_appcontext=False)
@click.argument("package", type=click.Path(exists=True, dir_okay=False))
def ig_install(package: str) -> None:
    """Store an IG package's StructureDefinitions, ValueSets and CodeSystems (all or nothing).

    Servers hold the profiles from their next start.
    """
    from server.errors import FhirError
    from server.fhir.access import SYSTEM
    from server.fhir.http import FhirRequest
    from server.fhir.interactions.update import update
    from server.fhir.validation.packages import read_package
    from server.fhir.validation.profiles import is_profile
    from server.store.migrate import upgrade
    from server.store.repository import SqlRepository
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    settings = Settings.from_env()
    try:
        found = read_package(package)
    except FhirError as err:
        raise click.ClickException(err.diagnostics) from None
    req = FhirRequest(method="PUT", base_url=settings.public_base_url)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    session = make_session_factory(engine)()
    done: list[str] = []
    try:
        repo = SqlRepository(session)
        with repo.transaction():
            for file, resource in found.resources:
                done.append(file)
                update(repo, SYSTEM, req, resource["resourceType"], resource["id"], body=resource)
    except FhirError as err:
        raise click.ClickException(f"{done[-1]}: {err.diagnostics}; nothing installed") from None
    finally:
        session.close()
        engine.dispose()
    kinds = [r["resourceType"] for _, r in found.resources]
    held = [
        r["url"] for _, r in found.resources if r["resourceType"] == "StructureDefinition" and is_profile(r)
    ]
    click.echo(
        f"installed {found.name}#{found.version}: {kinds.count('StructureDefinition')} StructureDefinitions "
        f"({len(held)} resource profiles), {kinds.count('ValueSet')} ValueSets, "
        f"{kinds.count('CodeSystem')} CodeSystems; servers enforce the profiles from their next start"
    )
    for url in held:
        click.echo(f"  profile {url}")


# Command groups of the other packages, one line each (auth: client/user, audit, bulk load).
# fmt: off
from server.audit.cli import audit as _audit_group; cli.add_command(_audit_group)  # noqa: E402,E702,I001
from auth.cli import client as _client_group; cli.add_command(_client_group)  # noqa: E402,E702,I001
from auth.cli import user as _user_group; cli.add_command(_user_group)  # noqa: E402,E702,I001
from auth.cli import launch as _launch_group; cli.add_command(_launch_group)  # noqa: E402,E702,I001
from auth.cli import keys as _keys_group; cli.add_command(_keys_group)  # noqa: E402,E702,I001
from server.bulk.load import load_command as _load; cli.add_command(_load)  # noqa: E402,E702,I001
# fmt: on


def main() -> None:
    """Console-script entry point: a setting that cannot be used stops it with a one-line message."""
    from server.settings import SettingsError

    try:
        cli()
    except SettingsError as exc:
        raise SystemExit(f"rehabfhir: {exc}") from None


if __name__ == "__main__":
    main()
