"""Discovery documents, and the FHIR API refusing every request without a valid token (401 / 403)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import client_credentials_token
from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import basic
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import ext


def test_smart_configuration(app: Any) -> None:
    r = app.test_client().get("/.well-known/smart-configuration")
    assert r.status_code == 200 and r.mimetype == "application/json"
    conf = r.get_json()
    assert conf["issuer"] == BASE and conf["jwks_uri"] == BASE + "/.well-known/jwks.json"
    assert conf["token_endpoint"] == BASE + "/auth/token"
    assert conf["authorization_endpoint"] == BASE + "/auth/authorize"
    assert conf["introspection_endpoint"] == BASE + "/auth/introspect"
    assert conf["revocation_endpoint"] == BASE + "/auth/revoke"
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"private_key_jwt", "client_secret_basic"} <= set(conf["token_endpoint_auth_methods_supported"])
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(conf["grant_types_supported"])
    assert conf["response_types_supported"] == ["code"] and "system/*.rs" in conf["scopes_supported"]
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert {
        "launch-standalone",
        "launch-ehr",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "context-ehr-patient",
        "permission-patient",
        "permission-user",
        "permission-offline",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
    } <= set(conf["capabilities"])


def test_capability_statement_security_is_open_and_smart(app: Any) -> None:
    r = app.test_client().get("/metadata", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200
    security = r.get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext_ = security["extension"][0]
    assert ext_["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {e["url"]: e["valueUri"] for e in ext_["extension"]} == {
        "authorize": BASE + "/auth/authorize",
        "token": BASE + "/auth/token",
        "revoke": BASE + "/auth/revoke",
        "introspect": BASE + "/auth/introspect",
    }


def test_jwks_has_kid_and_verifies_issued_tokens(app: Any) -> None:
    keys = app.test_client().get("/.well-known/jwks.json").get_json()["keys"]
    assert keys and all(k["kid"] and k["kty"] == "RSA" and "d" not in k for k in keys)
    token = client_credentials_token(app)
    header = jwt.decode(token, RSAKey.import_key(keys[0]), algorithms=["RS256"]).header
    assert header["kid"] == keys[0]["kid"]


def _outcome_401(r: Any, error: str = "invalid_token") -> str:
    assert r.status_code == 401, r.get_data(as_text=True)
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert f'error="{error}"' in r.headers["WWW-Authenticate"]
    body = r.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "login"
    return str(body["issue"][0]["diagnostics"])


def _sign(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": BASE,
        "aud": BASE,
        "sub": "x",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "client_id": "x",
        "scope": "system/*.cruds",
    }
    body.update(claims)
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key, algorithms=["RS256"])


@pytest.mark.parametrize("path", ["/Patient", "/Patient/1", "/_history", "/", "/Patient/1/$everything"])
def test_no_token_is_401(app: Any, path: str) -> None:
    r = app.test_client().get(path, headers={"Accept": "application/fhir+json"})
    assert "bearer token" in _outcome_401(r)


def test_bad_tokens_are_401(app: Any) -> None:
    c = app.test_client()
    ours = ext(app).keys.signing_key()
    stranger = RSAKey.generate_key(2048, parameters={"kid": ours.kid})  # same kid, wrong key
    none_alg = (
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
        + jwt.encode(
            {"alg": "HS256"},
            {"iss": BASE},
            __import__("joserfc.jwk", fromlist=["OctKey"]).OctKey.generate_key(256),
            algorithms=["HS256"],
        ).split(".")[1]
        + "."
    )
    cases = {
        "garbage": ("not-a-jwt", "not a JWT"),
        "alg none": (none_alg, "not signed by this server"),
        "forged": (_sign(stranger), "signature does not verify"),
        "wrong issuer": (_sign(ours, iss="https://evil.example"), "another server"),
        "wrong audience": (_sign(ours, aud="https://other.example/fhir"), "another server"),
        "expired": (_sign(ours, exp=int(time.time()) - 5), "expired"),
    }
    for name, (token, why) in cases.items():
        r = c.get("/Patient", headers=bearer(token))
        assert why in _outcome_401(r), name
    r = c.get("/Patient", headers={"Authorization": "Basic abc", "Accept": "application/fhir+json"})
    _outcome_401(r, "invalid_request")


def test_scopes_decide_type_and_interaction(app: Any) -> None:
    c = app.test_client()
    token = client_credentials_token(app, "system/Observation.rs system/Patient.r")
    r = c.post("/Patient", json={"resourceType": "Patient"}, headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert "create on Patient" in r.get_json()["issue"][0]["diagnostics"]
    r = c.get("/Patient", headers=bearer(token))
    assert r.status_code == 403 and "Searching Patient" in r.get_json()["issue"][0]["diagnostics"]
    assert c.get("/Observation", headers=bearer(token)).status_code == 200
    assert c.get("/Condition/x", headers=bearer(token)).status_code == 403
    # Unknown resource ids of an allowed type are 404, not 403.
    assert c.get("/Patient/nope", headers=bearer(token)).status_code == 404


def test_bundle_entries_are_checked_one_by_one(app: Any) -> None:
    c = app.test_client()
    token = client_credentials_token(app, "system/Observation.cruds")
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            },
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        ],
    }
    r = c.post("/", json=bundle, headers={**bearer(token), "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")
    tx = {**bundle, "type": "transaction"}
    r = c.post("/", json=tx, headers={**bearer(token), "Content-Type": "application/fhir+json"})
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"


def test_system_search_only_over_allowed_types(app: Any, fhir: Any) -> None:
    fhir.create({"resourceType": "Patient"})
    fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    token = client_credentials_token(app, "system/Observation.rs")
    r = app.test_client().get("/", headers=bearer(token))
    assert r.status_code == 200
    assert {e["resource"]["resourceType"] for e in r.get_json()["entry"]} == {"Observation"}
    r = app.test_client().get("/?_type=Patient", headers=bearer(token))
    assert r.status_code == 403
    r = app.test_client().get("/_history", headers=bearer(token))
    assert {e["resource"]["resourceType"] for e in r.get_json()["entry"]} == {"Observation"}


def test_public_client_cannot_use_client_credentials(app: Any) -> None:
    client_id, _ = add_app(app, "system/*.rs")
    r = app.test_client().post(
        "/auth/token", data={"grant_type": "client_credentials", "client_id": client_id}
    )
    assert r.status_code == 400 and r.get_json()["error"] == "unauthorized_client"


def test_secret_basic_token_response(app: Any) -> None:
    client, secret = ext(app).store.add_client("ehr", "system/*.rs system/Patient.cruds", "symmetric")
    c = app.test_client()
    r = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs user/*.rs"},
        headers=basic(client.client_id, secret),
    )
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    body = r.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["scope"] == "system/*.rs"
    assert "refresh_token" not in body
    r = c.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, "wrong")
    )
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Condition.cud"},
        headers=basic(client.client_id, secret),
    )
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_scope"
    r = c.post("/auth/token", data={"grant_type": "password"}, headers=basic(client.client_id, secret))
    assert r.status_code == 400 and r.get_json()["error"] == "unsupported_grant_type"


def test_token_endpoint_rate_limit(app: Any) -> None:
    client, _ = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    codes = [
        c.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers=basic(client.client_id, f"guess{i}"),
        ).status_code
        for i in range(22)
    ]
    assert codes[:20] == [401] * 20 and codes[20:] == [429, 429]
    r = c.post("/auth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, "x"))
    assert r.get_json()["error"] == "too_many_requests" and int(r.headers["Retry-After"]) >= 1


def test_revocation_and_introspection(app: Any) -> None:
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    token = c.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers=basic(client.client_id, secret),
    ).get_json()["access_token"]
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    r = c.post("/auth/introspect", data={"token": token}, headers=basic(client.client_id, secret))
    info = r.get_json()
    assert r.status_code == 200 and info["active"] is True and info["client_id"] == client.client_id
    assert info["scope"] == "system/*.rs" and info["exp"] > time.time()
    r = c.post("/auth/revoke", data={"token": token}, headers=basic(client.client_id, secret))
    assert r.status_code == 200
    assert "revoked" in _outcome_401(c.get("/Patient", headers=bearer(token)))
    r = c.post("/auth/introspect", data={"token": token}, headers=basic(client.client_id, secret))
    assert r.get_json() == {"active": False}
    r = c.post("/auth/introspect", data={"token": "rubbish"}, headers=basic(client.client_id, secret))
    assert r.get_json() == {"active": False}
    # Revoking an unknown token is still 200 (RFC 7009 §2.2); without client auth it is 401.
    assert (
        c.post("/auth/revoke", data={"token": "x"}, headers=basic(client.client_id, secret)).status_code
        == 200
    )
    assert c.post("/auth/introspect", data={"token": token}).status_code == 401


def test_key_rotation_keeps_old_tokens_until_retired(app: Any) -> None:
    keys = ext(app).keys
    before = client_credentials_token(app)
    old_kid = keys.signing_key().kid
    new_kid = keys.rotate()
    try:
        assert new_kid != old_kid
        published = {k["kid"] for k in app.test_client().get("/.well-known/jwks.json").get_json()["keys"]}
        assert {old_kid, new_kid} <= published
        after = client_credentials_token(app)
        assert jwt.decode(after, keys.key_set(new_kid), algorithms=["RS256"]).header["kid"] == new_kid
        assert app.test_client().get("/Patient", headers=bearer(before)).status_code == 200
        keys.rotate(retire_old=True)
        r = app.test_client().get("/Patient", headers=bearer(before))
        assert r.status_code == 401 and "signature" in r.get_json()["issue"][0]["diagnostics"]
    finally:
        keys.keys(refresh=True)
