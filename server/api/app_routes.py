"""Blueprint "app": the clinician and auditor pages under /app/, a SMART public client of this server.

The pages are static shells; their JavaScript signs in with authorization code + PKCE S256
through our own authorization endpoint and reads data only through the public FHIR and /rehab
APIs with the user's token, so scopes and auditing apply as for any other app.
https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import flask

from server.api.requests import base_url
from server.settings import Settings
from server.web import CLIENT_NAME
from server.web import STATIC
from server.web import TEMPLATES

log = logging.getLogger("rehabfhir.web")

bp = flask.Blueprint(
    "app",
    __name__,
    url_prefix="/app",
    template_folder=str(TEMPLATES),
    static_folder=str(STATIC),
    static_url_path="/static",
)

# Least privilege per console: a sign-in from the clinician pages asks for clinical reads only,
# one from the audit console for AuditEvent (and Patient, to name whom an event is about).
CLINICAL_SCOPES = (
    "openid fhirUser user/Patient.rs user/Observation.rs user/Goal.rs user/CarePlan.rs "
    "user/Encounter.rs user/Procedure.rs user/QuestionnaireResponse.rs "
    "user/EpisodeOfCare.rs user/Condition.rs user/ServiceRequest.rs user/Composition.rs"
)
AUDIT_SCOPES = "openid fhirUser user/AuditEvent.rs user/Patient.rs"
REQUESTED_SCOPES = " ".join(dict.fromkeys((CLINICAL_SCOPES + " " + AUDIT_SCOPES).split()))
"""Everything the client may ask for (its registration)."""

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

PAGES = {
    "home": "Rehab FHIR",
    "patients": "Patients",
    "patient": "Patient progress",
    "audit": "Audit console",
    "callback": "Signing in",
}


@bp.after_request
def security_headers(resp: flask.Response) -> flask.Response:
    """Send a strict CSP and the usual hardening headers with every /app/ response (and /rehab/docs)."""
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    # The callback URL carries the authorization code: never leak it in a Referer.
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if resp.mimetype == "text/html" or resp.mimetype == "application/json":
        resp.headers["Cache-Control"] = "no-store"
    if flask.request.is_secure:
        resp.headers["Strict-Transport-Security"] = "max-age=31536000"
    return resp


def _page(name: str, **context: Any) -> str:
    return flask.render_template("page.html", page=name, title=PAGES[name], **context)


@bp.get("/")
def home() -> str:
    """Render the start page (sign-in and the two consoles)."""
    return _page("home")


@bp.get("/callback")
def callback() -> str:
    """Render the redirect target that exchanges the authorization code in the browser."""
    return _page("callback")


@bp.get("/patients")
def patients() -> str:
    """Render the patient picker."""
    return _page("patients")


@bp.get("/patients/<id_>")
def patient(id_: str) -> str:
    """Render one patient's progress view (the id is read again by the script from the URL)."""
    return _page("patient", patient_id=id_)


@bp.get("/audit")
def audit() -> str:
    """Render the auditor console."""
    return _page("audit")


@bp.get("/config.json")
def config() -> flask.Response:
    """Tell the script its client id, the FHIR base (the token audience) and the scopes to ask."""
    return flask.jsonify(
        {
            "client_id": CLIENT_NAME,
            "fhir_base": base_url(),
            "scope": CLINICAL_SCOPES,
            "audit_scope": AUDIT_SCOPES,
            "auth": _has_auth(),
        }
    )


def _has_auth() -> bool:
    """Return whether the authorization server is wired into this app."""
    rules = flask.current_app.url_map.iter_rules()
    return any(rule.rule == "/.well-known/smart-configuration" for rule in rules)


def register_client(app: flask.Flask, settings: Settings) -> str | None:
    """Register the pages as a public client for {public base}/app/callback; return the URI when it was new.

    The redirect URI comes only from configuration (REHABFHIR_BASE_URL, or `rehabfhir serve`'s
    http://HOST:PORT), never from a request's Host header, which a caller controls. A client
    registered earlier under another base URL gets this one added (the operator moved the server),
    and its allowed scopes set to the pages' current ones (a newer release may ask for more).
    """
    ext = app.extensions.get("rehabfhir.auth")
    if ext is None:
        return None
    origin = urllib.parse.urlsplit(settings.public_base_url)
    redirect_uri = f"{origin.scheme}://{origin.netloc}/app/callback"
    if ext.store.client(CLIENT_NAME) is not None:
        if ext.store.set_client_scope(CLIENT_NAME, REQUESTED_SCOPES):
            log.info("client %s: allowed scopes updated to %s", CLIENT_NAME, REQUESTED_SCOPES)
        return redirect_uri if ext.store.add_redirect_uri(CLIENT_NAME, redirect_uri) else None
    try:
        ext.store.add_client(
            CLIENT_NAME, REQUESTED_SCOPES, "public", redirect_uris=[redirect_uri], client_id=CLIENT_NAME
        )
    except Exception:  # another worker registered it at the same moment
        log.info("client %s already registered by another worker", CLIENT_NAME)
        return None
    return redirect_uri


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the pages and their client; harden the session cookie (HttpOnly, SameSite, Secure)."""
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if not app.config.get("SESSION_COOKIE_SAMESITE"):
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if settings.base_url.startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    app.register_blueprint(bp)
    register_client(app, settings)
