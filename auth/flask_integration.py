"""Wire the authorization server into the app: blueprint, token check before every protected request.

https://hl7.org/fhir/smart-app-launch/app-launch.html#step-6-app-accesses-clinical-data-via-fhir-api

Only /metadata, the /.well-known documents, the /auth endpoints, /healthz, /readyz and the
/rehab API's description (/rehab/openapi.json, /rehab/docs) answer without a token (and /metrics with
REHABFHIR_METRICS_OPEN; else it needs a backend token); every other endpoint (the FHIR API,
the rest of /rehab and whatever blueprints join later) needs a valid bearer token, and the
FHIR layer then enforces its scopes through `flask.g.access`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask

from auth import discovery  # noqa: F401  (contributes the CapabilityStatement security block)
from auth.keys import KeyStore
from auth.ratelimit import FailureLimiter
from auth.ratelimit import LoginLimiter
from auth.revocation import TokenCache
from auth.revocation import watch_for
from auth.server import AuthServer
from auth.server import Urls
from auth.store import AuthStore
from auth.validators import BearerCheck
from auth.validators import access_context
from auth.views import bp
from server.api import ops_routes
from server.api.requests import settings
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.settings import Settings

# The /rehab API's description (no patient data; see server/api/rehab_docs.py) is open too.
OPEN_ENDPOINTS = frozenset({"fhir.metadata", "static", "rehab_docs.openapi_json", "rehab_docs.docs"})
# Blueprints that answer without a token: the auth endpoints themselves and the static
# pages of the "app" blueprint (a SMART public client that signs in through /auth/authorize).
OPEN_BLUEPRINTS = frozenset({"auth", "app"})


@dataclass
class AuthExtension:
    """What the auth views need, kept in app.extensions["rehabfhir.auth"]."""

    store: AuthStore
    keys: KeyStore
    server: AuthServer
    login_limiter: LoginLimiter
    token_limiter: FailureLimiter
    bearer: BearerCheck


def build(sessions: object, settings: Settings) -> AuthExtension:
    """Build the auth services on a session factory (its engine tells how revocations arrive)."""
    store = AuthStore(sessions)  # type: ignore[arg-type]
    keys = KeyStore(sessions, settings.secret_key)  # type: ignore[arg-type]
    server = AuthServer(store, keys)
    cache = TokenCache(settings.token_cache_size) if settings.token_cache else None
    engine = sessions.kw["bind"]  # type: ignore[attr-defined]
    watch = watch_for(cache, engine, settings.revocation_listen_url) if cache is not None else None
    if cache is not None:
        store.on_revoke.append(cache.clear)  # this worker at once; the others through the watch
    return AuthExtension(
        store,
        keys,
        server,
        LoginLimiter(sessions, per_user=5, per_address=20, window=60.0),  # type: ignore[arg-type]
        FailureLimiter(sessions, limit=20, window=60.0, prefix="token:"),  # type: ignore[arg-type]
        BearerCheck(server, cache, watch),
    )


def _is_open(endpoint: str | None, req: flask.Request | None = None) -> bool:
    if endpoint is None or endpoint in OPEN_ENDPOINTS:
        return True
    if (req or flask.request).blueprint in OPEN_BLUEPRINTS:
        return True
    if endpoint in ops_routes.OPEN_ENDPOINTS:  # /healthz, /readyz, /favicon.ico
        return True
    return endpoint == "ops.metrics" and bool(settings().metrics_open)


def _protector(app: flask.Flask) -> Callable[[], None]:
    """The before_request hook of one app: the bearer token's AccessContext in flask.g.access."""
    urls: dict[str, Urls] = {}  # per base URL (the settings may be replaced while the app runs)

    def _protect() -> None:
        # The request and flask.g looked up once: each flask.request / flask.g is a context lookup.
        req = flask.request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        if _is_open(endpoint, req):
            return
        if req.method == "OPTIONS":
            return
        ext: AuthExtension = app.extensions["rehabfhir.auth"]
        g = flask.g._get_current_object()  # type: ignore[attr-defined]
        base = app.config["REHABFHIR_SETTINGS"].public_base_url  # server.api.requests.base_url()
        at = urls.get(base)
        if at is None:
            at = urls[base] = Urls(base)
        ctx = access_context(
            ext.bearer,
            req.environ.get("HTTP_AUTHORIZATION"),  # the Authorization header
            at,
            req.remote_addr,
            g.get("session"),
        )
        g.access = ctx
        if endpoint == "ops.metrics":
            ops_routes.check_metrics_access(ctx)
        _check_instance_operation(ctx, req.view_args, g)

    return _protect


def _check_instance_operation(ctx: AccessContext, args: dict[str, Any] | None, g: Any) -> None:
    """An operation on one resource (Patient/1/$everything) needs that resource to be visible (else 404)."""
    args = args or {}
    type_, id_ = args.get("type_"), args.get("id_")
    name = str(args.get("target") or "")
    if type_ and id_ and not id_.startswith("$") and (name.startswith("$") or "name" in args):
        check_visible(g.repo, ctx, type_, id_, "r")


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the auth blueprint and require a bearer token on every other endpoint."""
    app.extensions["rehabfhir.auth"] = build(app.extensions["rehabfhir.sessions"], settings)
    app.register_blueprint(bp)
    app.before_request(_protector(app))
