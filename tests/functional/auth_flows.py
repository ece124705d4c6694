"""Helpers for the auth tests: register clients and users, drive the authorize pages, sign assertions."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jwk import RSAKey

BASE = "http://testserver/fhir"  # the test app's configured base URL (issuer and aud)
REDIRECT = "https://app.example/cb"
PASSWORD = "correct horse battery"


def ext(app: Any) -> Any:
    """The auth extension of the app."""
    return app.extensions["rehabfhir.auth"]


def s256(verifier: str) -> str:
    """PKCE S256 challenge of a verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def add_app(app: Any, scope: str, kind: str = "public", redirect: str = REDIRECT) -> tuple[str, str | None]:
    """Register an app client; return (client_id, secret)."""
    client, secret = ext(app).store.add_client("Rehab Tracker", scope, kind, redirect_uris=[redirect])
    return client.client_id, secret


def add_user(app: Any, name: str, role: str, fhir_user: str | None) -> str:
    """Create a user with PASSWORD; return its id."""
    return str(ext(app).store.add_user(name, PASSWORD, role, fhir_user).id)


def hidden(page: str, name: str) -> str:
    """The value of a hidden input of an HTML page."""
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, page
    return m.group(1)


def authorize_params(client_id: str, scope: str, verifier: str, **extra: str) -> dict[str, str]:
    """A standard authorization request."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-" + secrets.token_hex(4),
        "aud": BASE,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect Location."""
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login(c: Any, page: str, username: str, password: str = PASSWORD) -> Any:
    """Post the sign-in form of an authorization page; return the response."""
    form = {"step": "login", "csrf_token": hidden(page, "csrf_token")}
    return c.post("/auth/authorize", data={**form, "username": username, "password": password})


def get_code(
    c: Any, params: dict[str, str], username: str, patient: str | None = None, decision: str = "approve"
) -> dict[str, str]:
    """Drive login (and patient picking) and consent; return the redirect's query parameters."""
    r = c.get("/auth/authorize", query_string=params)
    if r.status_code == 302:
        return query_of(r.headers["Location"])
    page = r.get_data(as_text=True)
    if 'name="username"' in page:
        r = login(c, page, username)
        assert r.status_code == 200, r.get_data(as_text=True)
        page = r.get_data(as_text=True)
    if 'value="pick"' in page:
        assert patient is not None, "the practitioner must pick a patient"
        r = c.post(
            "/auth/authorize",
            data={"step": "pick", "csrf_token": hidden(page, "csrf_token"), "patient_id": patient},
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        page = r.get_data(as_text=True)
    assert 'value="consent"' in page, page
    r = c.post(
        "/auth/authorize",
        data={"step": "consent", "csrf_token": hidden(page, "csrf_token"), "decision": decision},
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    return query_of(r.headers["Location"])


def exchange(c: Any, client_id: str, code: str, verifier: str | None, **extra: str) -> Any:
    """POST the code to the token endpoint (public client)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return c.post("/auth/token", data=data)


def rsa_key() -> RSAKey:
    """A fresh RS384 client key with a kid."""
    return RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex, "use": "sig"})


def ec_key() -> ECKey:
    """A fresh ES384 client key with a kid."""
    return ECKey.generate_key("P-384", parameters={"kid": uuid.uuid4().hex, "use": "sig"})


def public_jwks(*keys: Any) -> dict[str, Any]:
    """The public JWKS of keys."""
    out = []
    for k in keys:
        d = dict(k.as_dict(private=False))
        d["kid"] = k.kid
        out.append(d)
    return {"keys": out}


def assertion(
    key: Any,
    client_id: str,
    aud: str = BASE + "/auth/token",
    alg: str = "RS384",
    *,
    lifetime: int = 120,
    jti: str | None = None,
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A signed client assertion (private_key_jwt)."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + lifetime,
        "iat": now,
        "jti": uuid.uuid4().hex if jti is None else jti,
    }
    body.update(claims)
    return jwt.encode({"alg": alg, "kid": kid or key.kid, "typ": "JWT"}, body, key, algorithms=[alg])


def backend_form(token: str, scope: str = "system/*.rs") -> dict[str, str]:
    """A client_credentials request with a client assertion."""
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    }


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization: Basic header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    """An Authorization: Bearer header plus Accept."""
    return {"Authorization": "Bearer " + token, "Accept": "application/fhir+json"}
