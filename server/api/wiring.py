"""Composition: engine and sessions per app, repository and access context per request."""

from __future__ import annotations

import logging
from collections.abc import Callable

import flask
import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import memory
from server.api.error_handlers import register_error_handlers
from server.api.fhir_routes import bp as fhir_bp
from server.fhir.access import DENY
from server.fhir.validation import profiles
from server.settings import Settings
from server.store.repository import SqlRepository
from server.store.session import make_engine
from server.store.session import make_session_factory
from server.store.session import startup_lock

log = logging.getLogger("rehabfhir.wiring")
# Requests that read one resource (version) with one statement: PostgreSQL runs them in autocommit.
_SINGLE_READS = frozenset({"fhir.read_route", "fhir.vread_route"})
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Wire storage, per-request state, error handlers and blueprints into the app.

    Migrating, seeding and registering the pages' client happen under the startup lock, so app
    hosts and workers that start at once against one database take turns.
    """
    engine = make_engine(settings.database_url)
    with startup_lock(engine):
        _init_app(app, settings, engine)


def _init_app(app: flask.Flask, settings: Settings, engine: sa.Engine) -> None:
    if settings.auto_migrate:
        from server.store.migrate import upgrade

        upgrade(engine)
    factory = make_session_factory(engine)
    app.extensions["rehabfhir.engine"] = engine
    app.extensions["rehabfhir.sessions"] = factory
    postgres = engine.dialect.name == "postgresql"

    @app.before_request
    def _open_session() -> None:
        session = factory()
        g = flask.g._get_current_object()  # type: ignore[attr-defined]  # one context lookup
        if postgres and flask.request.endpoint in _SINGLE_READS:
            # One SELECT needs no transaction: no BEGIN before it and no ROLLBACK at teardown
            # (two of a read's three round trips on its connection). The pool resets the level.
            session.connection(execution_options=_AUTOCOMMIT)
        g.session = session
        g.repo = SqlRepository(session)
        g.access = DENY  # default deny: the auth hook sets the token's context

    @app.after_request  # registered first, so it runs after every other after_request hook
    def _release_for_streams(response: flask.Response) -> flask.Response:
        # A streamed body (NDJSON export, a bulk file) is sent after this and teardown runs only
        # when the client closes it: give the connection back now (streams use their own session).
        if response.is_streamed:
            session = flask.g.get("session")
            if session is not None:
                session.close()
        if response.status_code < 400 and (flask.request.content_length or 0) >= memory.BIG_BODY:
            # A large body that was read and processed (not one refused unread): after the answer
            # is sent, its heap back. A trim holds the arenas' locks while it walks them.
            response.call_on_close(memory.trim)
        return response

    @app.teardown_request
    def _close_session(_exc: BaseException | None) -> None:
        session = flask.g.pop("session", None)
        if session is not None:
            session.close()

    register_error_handlers(app)
    # First: its before_request starts the clock and request id before auth and audit run.
    from server.api import ops_routes

    ops_routes.init_app(app, settings)
    # Then: a read's session on a replica (before the audit wraps flask.g.repo).
    from server.api import replica_routing

    replica_routing.init_app(app, settings, engine)
    hold_installed_profiles(factory)  # first: our own profiles (next) replace older stored versions
    use_rehab_terminology()
    # Extensions: each capability wires itself here, one line each (auth, audit, bulk, rehab).
    # fmt: off
    from server.audit import flask_integration as audit; audit.init_app(app, settings)  # noqa: E702,I001
    from auth import flask_integration; flask_integration.init_app(app, settings)  # noqa: E702,I001
    from server.api import bulk_routes; bulk_routes.init_app(app, settings)  # noqa: E702,I001
    from server.api import app_routes; app_routes.init_app(app, settings)  # noqa: E702,I001
    from server.api import rehab_routes; rehab_routes.init_app(app, settings)  # noqa: E702,I001
    from server.api import rehab_docs; rehab_docs.init_app(app, settings)  # noqa: E702,I001
    from server.api import subscription_routes; subscription_routes.init_app(app, settings)  # noqa: E702,I001
    # fmt: on
    app.register_blueprint(fhir_bp)


def use_rehab_terminology() -> None:
    """Answer $lookup and $translate from the rehab catalog (server.fhir does not import fhir_mapping)."""
    from fhir_mapping import codes
    from fhir_mapping import terminology
    from server.fhir.operations import terminology as operations

    operations.use(
        operations.Terminology(
            terminology.lookup, terminology.translate, terminology.resources, codes.PT_CONCEPTMAP
        )
    )
    profiles.hold(terminology.resources())


def hold_installed_profiles(factory: Callable[[], Session]) -> list[str]:
    """Hold the profiles, ValueSets and CodeSystems stored in the database (`rehabfhir ig install`).

    Read at start-up: a server started before an install holds the new profiles after a restart.
    """
    session = factory()
    try:
        repo = SqlRepository(session)
        found = [
            orjson.loads(stored.body)
            for type_ in ("CodeSystem", "ValueSet", "StructureDefinition")
            for stored in repo.iter_current(type_)
            if not stored.deleted and stored.body
        ]
    except Exception:  # a database without its tables yet: nothing installed
        log.warning("could not read the installed profiles", exc_info=True)
        return []
    finally:
        session.close()
    return profiles.hold(found)
