"""The server's public URL comes from configuration, never from a request's Host header."""

from __future__ import annotations

import base64
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from server import create_app
from server.api.app_routes import register_client
from server.cli import serve_settings
from server.settings import DEFAULT_BASE_URL
from server.settings import Settings

EVIL = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}


@pytest.fixture
def bare_app(tmp_path: pathlib.Path) -> Iterator[Any]:
    """An app with no REHABFHIR_BASE_URL, as `create_app()` builds it on a new SQLite file."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/x.db", testing=True))
    yield app
    app.extensions["rehabfhir.engine"].dispose()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _token(app: Any, headers: dict[str, str]) -> str:
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("t", "system/*.cruds", "symmetric")
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        headers={"Authorization": "Basic " + basic, **headers},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"])


def test_a_forged_host_changes_no_token_location_or_link(bare_app: Any) -> None:
    token = _token(bare_app, EVIL)
    claims = _claims(token)
    assert claims["iss"] == DEFAULT_BASE_URL
    assert claims["aud"] == DEFAULT_BASE_URL
    c = bare_app.test_client()
    auth = {"Authorization": "Bearer " + token, "Content-Type": "application/fhir+json", **EVIL}
    r = c.post("/Patient", data=orjson.dumps({"resourceType": "Patient"}), headers=auth)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.headers["Location"].startswith(DEFAULT_BASE_URL + "/Patient/")
    r = c.get("/Patient?_count=1", headers=auth)
    assert r.status_code == 200
    assert "evil.example" not in r.get_data(as_text=True)
    for path in ("/.well-known/smart-configuration", "/metadata", "/app/config.json"):
        r = c.get(path, headers=EVIL)
        assert r.status_code == 200, path
        assert "evil.example" not in r.get_data(as_text=True), path
        assert DEFAULT_BASE_URL in r.get_data(as_text=True), path


def test_a_token_issued_for_a_forged_host_is_refused_at_the_real_one(bare_app: Any) -> None:
    """The token's audience is the configured base, so a Host header cannot mint one for elsewhere."""
    token = _token(bare_app, EVIL)
    r = bare_app.test_client().get("/Patient", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 200


def test_the_pages_client_is_registered_without_any_configuration(bare_app: Any) -> None:
    client = bare_app.extensions["rehabfhir.auth"].store.client("rehabfhir-web")
    assert client is not None and client.client_type == "public"
    assert json.loads(client.redirect_uris) == [DEFAULT_BASE_URL + "/app/callback"]
    r = bare_app.test_client().get("/auth/authorize", query_string=_authorize_query(DEFAULT_BASE_URL))
    assert r.status_code in (200, 302), r.get_data(as_text=True)
    assert "Unknown app" not in r.get_data(as_text=True)


def test_a_moved_server_adds_its_new_callback_to_the_pages_client(bare_app: Any) -> None:
    moved = Settings(database_url="unused", base_url="http://clinic.local:9000/")
    assert register_client(bare_app, moved) == "http://clinic.local:9000/app/callback"
    assert register_client(bare_app, moved) is None  # idempotent
    client = bare_app.extensions["rehabfhir.auth"].store.client("rehabfhir-web")
    assert json.loads(client.redirect_uris) == [
        DEFAULT_BASE_URL + "/app/callback",
        "http://clinic.local:9000/app/callback",
    ]


def _authorize_query(base: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "rehabfhir-web",
        "redirect_uri": base + "/app/callback",
        "scope": "openid fhirUser user/Patient.rs",
        "state": "s" * 16,
        "aud": base,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }


@pytest.mark.parametrize(
    ("env_base", "host", "port", "expected"),
    [
        ("", "127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("", "clinic.local", 9000, "http://clinic.local:9000"),
        ("", "0.0.0.0", 8080, "http://localhost:8080"),
        ("", "::1", 8080, "http://[::1]:8080"),
        ("https://fhir.example.org/r4/", "0.0.0.0", 8080, "https://fhir.example.org/r4"),
    ],
    ids=["loopback", "named-host", "wildcard", "ipv6", "configured-wins"],
)
def test_serve_knows_its_public_url(env_base: str, host: str, port: int, expected: str) -> None:
    settings = serve_settings(Settings(database_url="unused", base_url=env_base), host, port)
    assert settings.public_base_url == expected
