"""Full flows over HTTP against gunicorn (2 workers), as a third-party app would run them with authlib."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT

from auth.store import AuthStore
from server.store.session import make_engine
from server.store.session import make_session_factory
from tests.functional.auth_flows import PASSWORD
from tests.functional.auth_flows import REDIRECT
from tests.functional.auth_flows import assertion
from tests.functional.auth_flows import public_jwks
from tests.functional.auth_flows import query_of
from tests.functional.auth_flows import rsa_key

FHIR = "application/fhir+json"


class SmartPrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc]
    """authlib signs assertions valid for an hour and reuses its claims dict (and jti) between calls;
    SMART allows at most 5 minutes, and this server refuses a repeated jti, so sign fresh claims."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        self.claims = {"exp": int(time.time()) + 240}
        return super().sign(auth, token_endpoint)


def _store(database_url: str) -> tuple[AuthStore, Any]:
    engine = make_engine(database_url)
    return AuthStore(make_session_factory(engine)), engine


def _field(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, page
    return m.group(1)


def test_standalone_launch_with_authlib_client(
    live_server: str, live_bearer: dict[str, str], database_url: str
) -> None:
    base = live_server
    conf = requests.get(base + "/.well-known/smart-configuration", timeout=30).json()
    patient = requests.post(
        base + "/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Live"}]},
        headers={**live_bearer, "Content-Type": FHIR},
        timeout=30,
    ).json()
    store, engine = _store(database_url)
    try:
        store.add_user("live-pat", PASSWORD, "patient", f"Patient/{patient['id']}")
        scope = "launch/patient openid fhirUser offline_access patient/*.rs"
        client, _ = store.add_client("Live App", scope, "public", redirect_uris=[REDIRECT])
    finally:
        engine.dispose()

    app = OAuth2Session(
        client.client_id,
        scope=scope,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = secrets.token_urlsafe(48)
    url, state = app.create_authorization_url(
        conf["authorization_endpoint"], code_verifier=verifier, aud=base
    )
    browser = requests.Session()
    page = browser.get(url, timeout=30).text
    page = browser.post(
        conf["authorization_endpoint"],
        timeout=30,
        data={
            "step": "login",
            "csrf_token": _field(page, "csrf_token"),
            "username": "live-pat",
            "password": PASSWORD,
        },
    ).text
    assert "Live App" in page and "Approve" in page
    r = browser.post(
        conf["authorization_endpoint"],
        timeout=30,
        allow_redirects=False,
        data={"step": "consent", "csrf_token": _field(page, "csrf_token"), "decision": "approve"},
    )
    assert r.status_code == 302 and query_of(r.headers["Location"])["state"] == state
    token = app.fetch_token(
        conf["token_endpoint"], authorization_response=r.headers["Location"], code_verifier=verifier
    )
    assert token["patient"] == patient["id"] and "id_token" in token and "refresh_token" in token

    read = app.get(f"{base}/Patient/{patient['id']}", headers={"Accept": FHIR}, timeout=30)
    assert read.status_code == 200 and read.json()["id"] == patient["id"]
    old_refresh = token["refresh_token"]
    new = app.refresh_token(conf["token_endpoint"], refresh_token=old_refresh)
    assert new["refresh_token"] != old_refresh
    assert app.get(f"{base}/Patient/{patient['id']}", headers={"Accept": FHIR}, timeout=30).status_code == 200

    # Revoke: every worker refuses the token at once.
    r = requests.post(
        conf["revocation_endpoint"],
        data={"token": new["access_token"], "client_id": client.client_id},
        timeout=30,
    )
    assert r.status_code == 200
    statuses = {
        requests.get(
            f"{base}/Patient/{patient['id']}",
            timeout=30,
            headers={"Authorization": "Bearer " + new["access_token"], "Accept": FHIR},
        ).status_code
        for _ in range(12)
    }
    assert statuses == {401}


def test_backend_service_with_authlib_private_key_jwt(live_server: str, database_url: str) -> None:
    base = live_server
    conf = requests.get(base + "/.well-known/smart-configuration", timeout=30).json()
    key = rsa_key()
    store, engine = _store(database_url)
    try:
        client, _ = store.add_client("Live EHR", "system/*.rs", "asymmetric", jwks=public_jwks(key))
    finally:
        engine.dispose()
    session = OAuth2Session(
        client.client_id,
        key.as_dict(private=True),
        token_endpoint_auth_method=SmartPrivateKeyJWT(
            conf["token_endpoint"], alg="RS384", headers={"kid": key.kid}
        ),
    )
    token = session.fetch_token(conf["token_endpoint"], grant_type="client_credentials", scope="system/*.rs")
    assert token["scope"] == "system/*.rs" and token["expires_in"] <= 300
    r = session.get(base + "/Patient", headers={"Accept": FHIR}, timeout=30)
    assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"
    info = requests.post(
        conf["introspection_endpoint"],
        data={
            "token": token["access_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key, client.client_id, aud=conf["token_endpoint"]),
        },
        timeout=30,
    ).json()
    assert info["active"] is True and info["client_id"] == client.client_id
