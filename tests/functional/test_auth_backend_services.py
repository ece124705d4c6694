"""SMART Backend Services: client_credentials with a private_key_jwt client assertion (RS384, ES384)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import assertion
from tests.functional.auth_flows import backend_form
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import ec_key
from tests.functional.auth_flows import ext
from tests.functional.auth_flows import public_jwks
from tests.functional.auth_flows import rsa_key


def _client(app: Any, *keys: Any, jwks_uri: str | None = None) -> str:
    jwks = None if jwks_uri else public_jwks(*keys)
    client, _ = ext(app).store.add_client("ehr", "system/*.rs", "asymmetric", jwks=jwks, jwks_uri=jwks_uri)
    return str(client.client_id)


@pytest.mark.parametrize(("make_key", "alg"), [(rsa_key, "RS384"), (ec_key, "ES384")], ids=["RS384", "ES384"])
def test_backend_service_token(app: Any, make_key: Any, alg: str) -> None:
    key = make_key()
    client_id = _client(app, key)
    c = app.test_client()
    r = c.post("/auth/token", data=backend_form(assertion(key, client_id, alg=alg)))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["scope"] == "system/*.rs" and body["expires_in"] <= 300 and "refresh_token" not in body
    assert r.headers["Cache-Control"] == "no-store"
    assert c.get("/Patient", headers=bearer(body["access_token"])).status_code == 200
    r = c.post(
        "/Patient",
        json={"resourceType": "Patient"},
        headers={**bearer(body["access_token"]), "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 403


def test_client_assertion_checks(app: Any) -> None:
    """authlib leaves jti replay, the 5-minute exp limit and the algorithm to us: each is refused."""
    key = rsa_key()
    other = rsa_key()
    client_id = _client(app, key)
    c = app.test_client()
    once = assertion(key, client_id, jti="same")
    assert c.post("/auth/token", data=backend_form(once)).status_code == 200
    cases = {
        "jti replay": (once, "already used"),
        "exp > 5 min": (assertion(key, client_id, lifetime=600), "5 minutes"),
        "expired": (assertion(key, client_id, lifetime=-10), "expired"),
        "RS256": (assertion(key, client_id, alg="RS256"), "RS384 or ES384"),
        "tampered signature": (assertion(key, client_id)[:-6] + "AAAAAA", "signature"),
        "unknown kid": (assertion(key, client_id, kid="nope"), "kid"),
        "wrong key, right kid": (assertion(other, client_id, kid=key.kid), "signature"),
        "wrong aud": (assertion(key, client_id, aud=BASE), "aud"),
        "sub differs": (assertion(key, client_id, sub="someone"), "iss and sub"),
        "unknown client": (assertion(key, "ghost"), "Unknown client"),
        "no jti": (assertion(key, client_id, jti=""), "jti"),
    }
    for name, (token, why) in cases.items():
        r = c.post("/auth/token", data=backend_form(token))
        assert r.status_code == 401, name
        body = r.get_json()
        assert body["error"] == "invalid_client" and why in body["error_description"], (name, body)
        ext(app).token_limiter.reset()
    form = backend_form(assertion(key, client_id))
    form["client_assertion_type"] = "urn:other"
    assert c.post("/auth/token", data=form).get_json()["error"] == "invalid_client"
    assert c.post("/auth/token", data=backend_form("not.a.jwt")).status_code == 401


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A tiny HTTP server publishing a JWKS that the test fills in."""
    doc: dict[str, Any] = {"keys": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", doc
    server.shutdown()


def test_jwks_registered_by_url(app: Any, jwks_server: tuple[str, dict[str, Any]]) -> None:
    url, doc = jwks_server
    key = ec_key()
    doc.update(public_jwks(key))
    client_id = _client(app, jwks_uri=url)
    c = app.test_client()
    assert c.post("/auth/token", data=backend_form(assertion(key, client_id, alg="ES384"))).status_code == 200
    # The client rotates its key at the URL: the new one works, the old one no longer does.
    new = ec_key()
    doc.update(public_jwks(new))
    assert c.post("/auth/token", data=backend_form(assertion(new, client_id, alg="ES384"))).status_code == 200
    assert c.post("/auth/token", data=backend_form(assertion(key, client_id, alg="ES384"))).status_code == 401


def test_access_token_lifetime_is_at_most_five_minutes(app: Any) -> None:
    key = rsa_key()
    client_id = _client(app, key)
    body = app.test_client().post("/auth/token", data=backend_form(assertion(key, client_id))).get_json()
    info = (
        app.test_client()
        .post(
            "/auth/introspect",
            data={**backend_form(assertion(key, client_id)), "token": body["access_token"]},
        )
        .get_json()
    )
    assert info["active"] is True and info["exp"] - time.time() <= 300 and info["sub"] == client_id
