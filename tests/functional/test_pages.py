"""The /app/ pages as HTTP resources: security headers, config, static files, escaping (no browser)."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest

from server.api.app_routes import register_client
from server.web import STATIC
from server.web import TEMPLATES

PAGES = ["/app/", "/app/patients", "/app/patients/ada", "/app/audit", "/app/callback"]


@pytest.mark.parametrize("path", PAGES)
def test_page_is_served_with_a_strict_csp(app: Any, path: str) -> None:
    r = app.test_client().get(path)
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"  # the callback URL carries the code
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Cache-Control"] == "no-store"
    html = r.get_data(as_text=True)
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "inline script found"
    assert re.search(r"<[^>]+\son[a-z]+=", html) is None, "inline event handler found"
    assert 'src="/app/static/main.js"' in html


def test_no_inline_handlers_or_styles_anywhere() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert re.search(r"\son[a-z]+\s*=", text) is None, path
        assert "style=" not in text and "<style" not in text, path
    for path in STATIC.glob("*.js"):
        text = path.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path
        assert "document.write" not in text, path


def test_patient_id_in_the_url_is_escaped(app: Any) -> None:
    r = app.test_client().get("/app/patients/%3Cscript%3Ealert(1)%3C%5Cscript%3E%22")
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "<script>alert(1)" not in html
    assert 'data-patient-id="&lt;script&gt;alert(1)&lt;\\script&gt;&#34;"' in html


def test_config_names_client_audience_and_scopes(app: Any) -> None:
    r = app.test_client().get("/app/config.json")
    assert r.status_code == 200
    body = r.get_json()
    assert body["client_id"] == "rehabfhir-web"
    assert body["fhir_base"] == "http://testserver/fhir"  # the token audience: the configured FHIR base
    assert {"openid", "fhirUser", "user/Patient.rs", "user/Observation.rs"} <= set(body["scope"].split())
    assert "user/AuditEvent.rs" not in body["scope"]  # least privilege: clinical sign-ins never ask for audit
    assert set(body["audit_scope"].split()) == {"openid", "fhirUser", "user/AuditEvent.rs", "user/Patient.rs"}
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("main.js", "text/javascript"),
        ("app.css", "text/css"),
        ("smart.js", "text/javascript"),
        ("chart.js", "text/javascript"),
    ],
)
def test_static_files(app: Any, name: str, mimetype: str) -> None:
    r = app.test_client().get(f"/app/static/{name}")
    assert r.status_code == 200
    assert r.mimetype == mimetype
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_app_path_is_an_operation_outcome(app: Any) -> None:
    r = app.test_client().get("/app/static/nope.js")
    assert r.status_code == 404


def test_session_cookie_is_hardened(app: Any) -> None:
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] in ("Lax", "Strict")


def test_https_base_makes_the_session_cookie_secure_and_registers_the_client(tmp_path: pathlib.Path) -> None:
    from server import create_app
    from server.settings import Settings

    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path}/x.db", testing=True, base_url="https://clinic.example/fhir"
        )
    )
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        r = app.test_client().get("/app/", base_url="https://clinic.example")
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        # the pages registered themselves as a public client for the configured origin only
        client = app.extensions["rehabfhir.auth"].store.client("rehabfhir-web")
        assert client.client_type == "public"
        assert json.loads(client.redirect_uris) == ["https://clinic.example/app/callback"]
        assert register_client(app, app.config["REHABFHIR_SETTINGS"]) is None  # idempotent
    finally:
        app.extensions["rehabfhir.engine"].dispose()


def test_an_already_registered_pages_client_gets_the_current_scopes(tmp_path: pathlib.Path) -> None:
    """A database from before the episode view: its pages client may not ask for EpisodeOfCare etc."""
    from server import create_app
    from server.api.app_routes import REQUESTED_SCOPES
    from server.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", testing=True)
    app = create_app(settings)
    try:
        store = app.extensions["rehabfhir.auth"].store
        old = "openid fhirUser user/Patient.rs user/Observation.rs"
        assert store.set_client_scope("rehabfhir-web", old)
        register_client(app, settings)  # what every start does
        assert store.client("rehabfhir-web").scope == REQUESTED_SCOPES
        assert "user/EpisodeOfCare.rs" in REQUESTED_SCOPES.split()
        assert not store.set_client_scope("rehabfhir-web", REQUESTED_SCOPES)  # unchanged: no write
        assert not store.set_client_scope("no-such-client", old)
    finally:
        app.extensions["rehabfhir.engine"].dispose()


def test_pages_ship_as_package_data() -> None:
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert set(data["server.web"]) >= {"templates/*.html", "static/*"}
