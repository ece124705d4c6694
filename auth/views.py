"""Blueprint "auth": authorize (login, patient picker, consent), token, revoke, introspect, discovery.

https://hl7.org/fhir/smart-app-launch/app-launch.html

The pages are server-rendered HTML forms with a CSRF token held in the signed session cookie;
the pending authorization request is kept in that session too, so the browser cannot alter
it between the steps.
"""

from __future__ import annotations

import html
import json
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import flask

from auth import roles
from auth import scopes as scope_rules
from auth.discovery import openid_configuration
from auth.discovery import smart_configuration
from auth.keys import now
from auth.models import AuthUser
from auth.server import CODE_TTL
from auth.server import OAuthError
from auth.server import Urls
from auth.server import unverified_part
from server.api.requests import base_url

bp = flask.Blueprint("auth", __name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# What the token, revoke and sign-in views leave in flask.g for the audit trail to record
# (auth knows nothing of audit: an after_request hook of the audit extension picks it up).
AUTH_EVENT = "auth_event"


@dataclass(frozen=True)
class AuthEvent:
    """One authentication event: login, login-failure, token-issue, token-refresh, token-revoke."""

    kind: str
    ok: bool
    client_id: str | None = None
    user: str | None = None
    detail: str | None = None


def _note(event: AuthEvent) -> None:
    setattr(flask.g, AUTH_EVENT, event)


def _claimed_client(form: dict[str, str]) -> str | None:
    """The client id a request claims (form, Basic header, or the assertion's issuer), unverified."""
    if form.get("client_id"):
        return form["client_id"]
    auth = flask.request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return auth.username
    claims = unverified_part(form.get("client_assertion", ""), 1) or {}
    return str(claims["iss"]) if claims.get("iss") else None


def _ext() -> Any:
    return flask.current_app.extensions["rehabfhir.auth"]


def _urls() -> Urls:
    return Urls(base_url())


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    resp = flask.Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers.update({**NO_STORE, **(headers or {})})
    return resp


# -- discovery ----------------------------------------------------------------------------


@bp.get("/.well-known/smart-configuration")
def smart_config() -> flask.Response:
    resp = flask.Response(json.dumps(smart_configuration(base_url())), mimetype="application/json")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.get("/.well-known/openid-configuration")
def openid_config() -> flask.Response:
    resp = flask.Response(json.dumps(openid_configuration(base_url())), mimetype="application/json")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.get("/.well-known/jwks.json")
def jwks() -> flask.Response:
    resp = flask.Response(json.dumps(_ext().keys.jwks()), mimetype="application/json")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


# -- token, revoke, introspect ------------------------------------------------------------


def _form() -> dict[str, str]:
    return {k: v for k, v in flask.request.form.items()}


def _limited(address: str) -> flask.Response | None:
    wait = _ext().token_limiter.blocked(address)
    if wait:
        return _json(
            {"error": "too_many_requests", "error_description": "Too many failed attempts; slow down"},
            429,
            {"Retry-After": str(int(wait))},
        )
    return None


def _oauth_call(func: Any, kind: str | None = None) -> flask.Response:
    form = _form()
    # Failures count per address and claimed client ("token:<address>|<client id>", shared by all
    # hosts): behind one proxy address (REHABFHIR_TRUSTED_PROXIES unset) a stranger's failures with
    # made-up client ids then lock out no one else; only the client id they name.
    address = f"{flask.request.remote_addr or ''}|{_claimed_client(form) or ''}"
    if kind == "token-issue" and form.get("grant_type") == "refresh_token":
        kind = "token-refresh"
    blocked = _limited(address)
    if blocked is not None:
        if kind:
            _note(AuthEvent(kind, False, _claimed_client(form), detail="too_many_requests"))
        return blocked
    try:
        body = func(form, flask.request.headers.get("Authorization"), _urls())
    except OAuthError as err:
        if err.error in ("invalid_client", "invalid_grant", "invalid_token"):
            _ext().token_limiter.fail(address)
        if kind:
            _note(AuthEvent(kind, False, _claimed_client(form), detail=f"{err.error}: {err.description}"))
        return _json(err.body(), err.status, err.headers)
    if kind:
        _note(_success(kind, form, body))
    return _json(body if body is not None else {})


def _success(kind: str, form: dict[str, str], body: dict[str, Any] | None) -> AuthEvent:
    if body and "access_token" in body:
        claims = unverified_part(body["access_token"], 1) or {}  # we signed it a moment ago
        user = claims.get("fhirUser") or claims.get("sub")
        return AuthEvent(kind, True, claims.get("client_id"), user, f"scope: {claims.get('scope', '')}")
    return AuthEvent(kind, True, _claimed_client(form))


@bp.post("/auth/token")
def token() -> flask.Response:
    return _oauth_call(_ext().server.token, "token-issue")


@bp.post("/auth/revoke")
def revoke() -> flask.Response:
    return _oauth_call(_ext().server.revoke, "token-revoke")


@bp.post("/auth/introspect")
def introspect() -> flask.Response:
    return _oauth_call(_ext().server.introspect)


# -- authorize: pages ---------------------------------------------------------------------

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}label{{display:block;margin:.6rem 0}}
.error{{color:#a00}}button{{margin-right:1rem}}</style></head><body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> flask.Response:
    resp = flask.Response(
        _PAGE.format(title=html.escape(title), body=body), status=status, mimetype="text/html"
    )
    resp.headers.update(
        {**NO_STORE, "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
    )
    return resp


def _form_html(step: str, inner: str) -> str:
    csrf = html.escape(flask.session.get("csrf", ""))
    return (
        f'<form method="post" action="{html.escape(flask.url_for("auth.authorize"))}">'
        f'<input type="hidden" name="csrf_token" value="{csrf}">'
        f'<input type="hidden" name="step" value="{step}">'
        f"{inner}</form>"
    )


def _login_page(error: str = "", status: int = 200) -> flask.Response:
    pending = flask.session["authz"]
    msg = f'<p class="error">{html.escape(error)}</p>' if error else ""
    inner = (
        '<label>Username <input name="username" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
        '</label><button type="submit">Sign in</button>'
    )
    return _page(
        "Sign in",
        f"<p>{html.escape(pending['client_name'])} asks to connect.</p>{msg}" + _form_html("login", inner),
        status,
    )


def _picker_page() -> flask.Response:
    from server.fhir.search.query import SearchQuery

    result = flask.g.repo.search(SearchQuery(types=("Patient",), count=50, total="none"))
    options = []
    for match in result.matches:
        doc = json.loads(match.body)
        name = " ".join(
            " ".join(n.get("given", [])) + " " + n.get("family", "") for n in doc.get("name", [])[:1]
        )
        options.append(
            f'<option value="{html.escape(match.id)}">{html.escape(name.strip() or match.id)}'
            f" ({html.escape(match.id)})</option>"
        )
    inner = (
        f'<label>Patient <select name="patient">{"".join(options)}</select></label>'
        '<label>or patient id <input name="patient_id"></label><button type="submit">Continue</button>'
    )
    return _page("Choose a patient", _form_html("pick", inner))


def _consent_page() -> flask.Response:
    """Show what will be granted, and each requested scope that will not be, with the reason."""
    pending = flask.session["authz"]
    items = "".join(
        f"<li>{html.escape(scope_rules.describe(s))} <code>{html.escape(s)}</code></li>"
        for s in pending["scope"]
    )
    dropped = "".join(
        f"<li><code>{html.escape(s)}</code>: {html.escape(why)}</li>" for s, why in pending.get("dropped", [])
    )
    not_granted = f'<h2>Not granted</h2><ul class="dropped">{dropped}</ul>' if dropped else ""
    patient = f"<p>Patient: {html.escape(pending['patient'])}</p>" if pending.get("patient") else ""
    deny = '<button type="submit" name="decision" value="deny">Deny</button>'
    if not _grants_data(pending["scope"]):
        return _page(
            "Nothing to allow",
            f"<p><strong>{html.escape(pending['client_name'])}</strong> asked for nothing your account "
            f"may grant.</p>{not_granted}" + _form_html("consent", deny),
        )
    approve = '<button type="submit" name="decision" value="approve">Approve</button>'
    return _page(
        "Allow access?",
        f"<p><strong>{html.escape(pending['client_name'])}</strong> asks to:</p>"
        f"<ul>{items}</ul>{patient}{not_granted}" + _form_html("consent", approve + deny),
    )


def _grants_data(scopes: list[str]) -> bool:
    return any(scope_rules.parse_rule(s) for s in scopes)


def _redirect(uri: str, **params: str | None) -> flask.Response:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    resp = flask.Response(status=302)
    resp.headers["Location"] = uri + ("&" if "?" in uri else "?") + query
    resp.headers.update(NO_STORE)
    return resp


# -- authorize: flow ----------------------------------------------------------------------


def _start(values: dict[str, str]) -> flask.Response:
    """Validate an authorization request and keep it in the session."""
    store = _ext().store
    client = store.client(values.get("client_id", ""))
    if client is None:
        return _page("Unknown app", "<p>The client_id is not registered.</p>", 400)
    uri = values.get("redirect_uri", "")
    if uri not in json.loads(client.redirect_uris):
        return _page("Unregistered redirect", "<p>The redirect_uri is not registered for this app.</p>", 400)
    state = values.get("state")

    def error(code: str, text: str) -> flask.Response:
        return _redirect(uri, error=code, error_description=text, state=state)

    if values.get("response_type") != "code":
        return error("unsupported_response_type", "response_type must be code")
    challenge = values.get("code_challenge", "")
    if values.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128:
        return error("invalid_request", "PKCE with code_challenge_method=S256 is required")
    if values.get("aud", "").rstrip("/") != base_url():
        return error("invalid_request", "aud must be this server's FHIR base URL")
    granted = [
        s
        for s in scope_rules.grant(values.get("scope"), client.scope)
        if (r := scope_rules.parse_rule(s)) is None or r.context != "system"
    ]
    if not _grants_data(granted):
        return error("invalid_scope", "None of the requested clinical scopes is allowed for this app")
    dropped = [
        [
            s,
            "system/ scopes are for backend services"
            if s.startswith("system/")
            else "not registered for this app",
        ]
        for s in scope_rules.parse(values.get("scope")).scopes
        if s not in granted
    ]
    launch_patient = launch_encounter = None
    if values.get("launch"):
        context = store.launch(values["launch"])
        if context is None:
            return error("invalid_request", "Unknown or expired launch")
        launch_patient, launch_encounter = context.patient, context.encounter
    flask.session["csrf"] = secrets.token_urlsafe(24)
    flask.session["authz"] = {
        "client_id": client.client_id,
        "client_name": client.name,
        "redirect_uri": uri,
        "state": state,
        "asked": granted,  # what the app may have; the signed-in user's role caps it (_next)
        "scope": granted,
        "dropped": dropped,
        "app_dropped": dropped,
        "challenge": challenge,
        "nonce": values.get("nonce"),
        "patient": launch_patient,
        "encounter": launch_encounter,
    }
    return _next()


def _user() -> AuthUser | None:
    uid = flask.session.get("uid")
    return _ext().store.user(uid) if uid else None


def _own_patient(user: AuthUser) -> str | None:
    if user.fhir_user and user.fhir_user.startswith("Patient/"):
        return user.fhir_user.split("/", 1)[1]
    return None


def _next() -> flask.Response:
    """Show the next page the pending request needs: login, patient picker or consent."""
    pending = flask.session["authz"]
    user = _user()
    if user is None:
        return _login_page()
    capped = roles.cap(user.role, pending["asked"])
    pending["scope"] = list(capped.granted)
    pending["dropped"] = pending["app_dropped"] + [list(d) for d in capped.dropped]
    policy = scope_rules.parse(" ".join(pending["scope"]))
    needs_patient = policy.has_patient_scopes or "launch/patient" in pending["scope"]
    if user.role == "patient":
        own = _own_patient(user)
        if own is None:
            return _page("No patient record", "<p>Your account is not linked to a patient record.</p>", 403)
        # A patient only ever gets patient-level access to their own record.
        pending["patient"] = own
    flask.session["authz"] = pending
    if (
        user.role != "patient"
        and needs_patient
        and not pending.get("patient")
        and _grants_data(pending["scope"])
    ):
        return _picker_page()
    return _consent_page()


def _finish(decision: str) -> flask.Response:
    pending = flask.session.pop("authz")
    policy = scope_rules.parse(" ".join(pending["scope"]))
    if (policy.has_patient_scopes or "launch/patient" in pending["scope"]) and not pending.get("patient"):
        return _redirect(
            pending["redirect_uri"],
            error="invalid_request",
            error_description="No patient chosen",
            state=pending["state"],
        )
    if decision == "approve" and not _grants_data(pending["scope"]):
        return _redirect(
            pending["redirect_uri"],
            error="invalid_scope",
            error_description="None of the requested scopes may be granted to this user",
            state=pending["state"],
        )
    if decision != "approve":
        return _redirect(
            pending["redirect_uri"],
            error="access_denied",
            error_description="The user denied access",
            state=pending["state"],
        )
    code = secrets.token_urlsafe(32)
    _ext().store.add_code(
        code,
        client_id=pending["client_id"],
        user_id=flask.session["uid"],
        redirect_uri=pending["redirect_uri"],
        scope=" ".join(pending["scope"]),
        patient=pending.get("patient"),
        encounter=pending.get("encounter"),
        code_challenge=pending["challenge"],
        nonce=pending.get("nonce"),
        family_id=uuid.uuid4().hex,
        expires_at=now() + timedelta(seconds=CODE_TTL),
    )
    return _redirect(pending["redirect_uri"], code=code, state=pending["state"])


def _login() -> flask.Response:
    username = flask.request.form.get("username", "")
    address = flask.request.remote_addr
    limiter = _ext().login_limiter
    wait = limiter.reserve(username, address)  # reserve, then check: never check-then-record
    if wait:
        _note(
            AuthEvent(
                "login",
                False,
                flask.session["authz"].get("client_id"),
                username[:64] or None,
                "too many failed sign-ins",
            )
        )
        resp = _login_page("Too many failed sign-ins; try again later.", 429)
        resp.headers["Retry-After"] = str(int(wait))
        return resp
    user = _ext().store.authenticate_user(username, flask.request.form.get("password", ""))
    client_id = flask.session["authz"].get("client_id")
    if user is None:
        _note(AuthEvent("login", False, client_id, username[:64] or None, "wrong username or password"))
        return _login_page("Wrong username or password.", 401)
    limiter.release(username, address)
    _note(AuthEvent("login", True, client_id, user.fhir_user or user.username))
    flask.session["uid"] = user.id
    flask.session["csrf"] = secrets.token_urlsafe(24)  # a new session state after login
    return _next()


def _pick() -> flask.Response:
    patient = (flask.request.form.get("patient_id") or flask.request.form.get("patient") or "").strip()
    user = _user()
    if user is None or user.role == "patient":
        return _page("Not allowed", "<p>Only clinic staff pick a patient.</p>", 403)
    stored = flask.g.repo.read_resource("Patient", patient) if patient else None
    if stored is None or stored.deleted:
        return _page("Unknown patient", "<p>No such patient.</p>", 400)
    pending = flask.session["authz"]
    pending["patient"] = patient
    flask.session["authz"] = pending
    return _consent_page()


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> flask.Response:
    step = flask.request.form.get("step") if flask.request.method == "POST" else None
    if step is None:  # GET, or an authorization request sent by POST (authorize-post)
        return _start({k: v for k, v in flask.request.values.items()})
    sent = flask.request.form.get("csrf_token", "")
    if (
        not sent
        or not secrets.compare_digest(sent, flask.session.get("csrf", ""))
        or "authz" not in flask.session
    ):
        return _page(
            "Expired form", "<p>The form expired or was not sent by this site; start again.</p>", 400
        )
    if step == "login":
        return _login()
    if _user() is None:
        return _login_page()
    if step == "pick":
        return _pick()
    if step == "consent":
        return _finish(flask.request.form.get("decision", "deny"))
    return _page("Bad request", "<p>Unknown step.</p>", 400)
