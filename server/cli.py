"""The `rehabfhir` command line (also reachable as `flask --app server ...`)."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from server import create_app
from server.settings import Settings


def _app() -> object:
    return create_app(Settings.from_env())


@click.group(cls=FlaskGroup, create_app=_app, add_default_commands=False)
def cli() -> None:
    """Rehab FHIR backend: serve FHIR R4B and manage its database."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=8, show_default=True, type=int, help="threads per worker")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the FHIR API (migrating the database first) under gunicorn."""
    from server.store.migrate import upgrade
    from server.store.session import make_engine

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    click.echo(f"rehabfhir serving FHIR R4B at http://{host}:{port}/ on {engine.url.render_as_string()}")
    run_gunicorn(f"{host}:{port}", workers, threads)


def run_gunicorn(bind: str, workers: int, threads: int) -> None:
    """Run the app under gunicorn with the gthread worker."""
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "accesslog": "-",
                "timeout": 120,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return create_app(Settings.from_env())

    _App().run()


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations on DATABASE_URL."""
    from server.store.migrate import upgrade
    from server.store.session import make_engine

    engine = make_engine(Settings.from_env().database_url)
    upgrade(engine, revision)
    click.echo(f"database at {revision}")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
