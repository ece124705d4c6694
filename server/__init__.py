"""rehabfhir: a FHIR R4B server for physical-therapy and rehabilitation clinics."""

from __future__ import annotations

import flask

from server.settings import Settings


def create_app(settings: Settings | None = None) -> flask.Flask:
    """Build the Flask app: storage, error handlers, blueprints."""
    from server import memory
    from server.api import wiring
    from server.api.flask_app import RehabFlask

    memory.limit_arenas()  # before the worker's threads exist: they share two malloc arenas

    settings = settings or Settings.from_env()
    app = RehabFlask(__name__)
    app.config["REHABFHIR_SETTINGS"] = settings
    app.config["SECRET_KEY"] = settings.secret_key
    app.json.sort_keys = False  # type: ignore[attr-defined]
    wiring.init_app(app, settings)
    if settings.trusted_proxies > 0:  # the client address behind N proxies (rate limits, audit)
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    return app
