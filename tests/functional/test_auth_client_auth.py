"""Client authentication at the token and introspection endpoints: JOSE header, jku, scope, introspect."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import assertion
from tests.functional.auth_flows import backend_form
from tests.functional.auth_flows import basic
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import ext
from tests.functional.auth_flows import public_jwks
from tests.functional.auth_flows import rsa_key
from tests.functional.test_auth_backend_services import jwks_server  # noqa: F401 (fixture)

TOKEN_URL = BASE + "/auth/token"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _signed(key: Any, client_id: str, **header: Any) -> str:
    """A validly signed client assertion whose JOSE header carries extra parameters (signed by hand:
    joserfc itself refuses to produce some of these headers)."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 120, "jti": uuid.uuid4().hex}
    signing_input = _b64({"alg": "RS384", "kid": key.kid, "typ": "JWT", **header}) + "." + _b64(claims)
    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA384())
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _backend(app: Any, key: Any = None, jwks_uri: str | None = None) -> str:
    jwks = None if jwks_uri else public_jwks(key)
    client, _ = ext(app).store.add_client("ehr", "system/*.rs", "asymmetric", jwks=jwks, jwks_uri=jwks_uri)
    return str(client.client_id)


def _refused(r: Any, why: str) -> None:
    assert r.status_code == 401, r.get_data(as_text=True)
    body = r.get_json()
    assert body["error"] == "invalid_client" and why in body["error_description"], body


@pytest.mark.parametrize(
    "header",
    [{"kty": "RSA"}, {"x-vendor": {"a": 1}}, {"kty": "RSA", "x5t": "abc"}],
    ids=["kty (Bulk Data test tool)", "vendor parameter", "kty and x5t"],
)
def test_unknown_header_parameters_are_ignored(app: Any, header: dict[str, Any]) -> None:
    key = rsa_key()
    client_id = _backend(app, key)
    r = app.test_client().post("/auth/token", data=backend_form(_signed(key, client_id, **header)))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["scope"] == "system/*.rs"


@pytest.mark.parametrize(
    "header",
    [
        {"crit": ["x-vendor"], "x-vendor": 1},
        {"crit": ["kty"], "kty": "RSA"},
        {"crit": ["b64"], "b64": True},
        {"crit": ["missing"]},
        {"crit": "x-vendor", "x-vendor": 1},
    ],
    ids=["vendor", "kty", "b64", "absent", "not a list"],
)
def test_critical_header_parameters_are_refused(app: Any, header: dict[str, Any]) -> None:
    key = rsa_key()
    client_id = _backend(app, key)
    r = app.test_client().post("/auth/token", data=backend_form(_signed(key, client_id, **header)))
    _refused(r, "critical header")


def test_jku_must_be_the_registered_jwks_url(app: Any, jwks_server: tuple[str, dict[str, Any]]) -> None:  # noqa: F811
    url, doc = jwks_server
    key = rsa_key()
    doc.update(public_jwks(key))
    client_id = _backend(app, jwks_uri=url)
    c = app.test_client()
    assert c.post("/auth/token", data=backend_form(_signed(key, client_id, jku=url))).status_code == 200
    for other in ("https://attacker.example/jwks.json", url + "?x=1", url.replace("127.0.0.1", "localhost")):
        _refused(c.post("/auth/token", data=backend_form(_signed(key, client_id, jku=other))), "jku")
        ext(app).token_limiter.reset()
    # A client registered with a JWKS document (no URL) may not point at any URL.
    inline_key = rsa_key()
    inline_id = _backend(app, inline_key)
    _refused(c.post("/auth/token", data=backend_form(_signed(inline_key, inline_id, jku=url))), "jku")
    assert c.post("/auth/token", data=backend_form(_signed(inline_key, inline_id))).status_code == 200


@pytest.mark.parametrize("scope", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_client_credentials_needs_a_scope(app: Any, scope: str | None) -> None:
    key = rsa_key()
    client_id = _backend(app, key)
    secret_client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    form = backend_form(assertion(key, client_id))
    data = {"grant_type": "client_credentials"}
    if scope is None:
        del form["scope"]
    else:
        form["scope"] = data["scope"] = scope
    for r in (
        c.post("/auth/token", data=form),
        c.post("/auth/token", data=data, headers=basic(secret_client.client_id, secret or "")),
    ):
        assert r.status_code == 400, r.get_data(as_text=True)
        body = r.get_json()
        assert body["error"] == "invalid_scope" and "access_token" not in body


def test_introspection_needs_a_confidential_client(app: Any) -> None:
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    key = rsa_key()
    backend_id = _backend(app, key)
    public_id, _ = add_app(app, "openid fhirUser user/*.rs")
    c = app.test_client()
    token = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers=basic(client.client_id, secret or ""),
    ).get_json()["access_token"]
    refused = {
        "bearer of a valid token": c.post("/auth/introspect", data={"token": token}, headers=bearer(token)),
        "public client_id": c.post("/auth/introspect", data={"token": token, "client_id": public_id}),
        "no credentials": c.post("/auth/introspect", data={"token": token}),
        "wrong secret": c.post(
            "/auth/introspect", data={"token": token}, headers=basic(client.client_id, "wrong")
        ),
        "public client with a made-up secret": c.post(
            "/auth/introspect", data={"token": token, "client_id": public_id, "client_secret": "x"}
        ),
    }
    for name, r in refused.items():
        assert r.status_code == 401, name
        assert r.get_json()["error"] == "invalid_client" and "active" not in r.get_json(), name
        ext(app).token_limiter.reset()
    by_secret = c.post(
        "/auth/introspect", data={"token": token}, headers=basic(client.client_id, secret or "")
    )
    by_post = c.post(
        "/auth/introspect",
        data={"token": token, "client_id": client.client_id, "client_secret": secret or ""},
    )
    by_jwt = c.post("/auth/introspect", data={**backend_form(assertion(key, backend_id)), "token": token})
    for r in (by_secret, by_post, by_jwt):
        assert r.status_code == 200 and r.get_json()["active"] is True
        assert r.get_json()["client_id"] == client.client_id


def test_oauth_errors_carry_the_standard_reason_phrases(app: Any) -> None:
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    r = c.post("/auth/introspect", data={"token": "x"})
    assert r.status == "401 Unauthorized" and r.get_json()["error"] == "invalid_client"
    r = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(client.client_id, secret or ""),
    )
    assert r.status == "400 Bad Request" and r.get_json()["error"] == "invalid_scope"
    token = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers=basic(client.client_id, secret or ""),
    ).get_json()["access_token"]
    r = c.post(
        "/AuditEvent",
        json={"resourceType": "AuditEvent"},
        headers={**bearer(token), "Content-Type": "application/fhir+json"},
    )
    assert r.status == "403 Forbidden"
