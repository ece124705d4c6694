"""SMART App Launch: authorization code + PKCE, login/picker/consent pages, patient confinement, refresh."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from auth.keys import now
from auth.models import AuthCode
from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import PASSWORD
from tests.functional.auth_flows import REDIRECT
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import ext
from tests.functional.auth_flows import get_code
from tests.functional.auth_flows import hidden
from tests.functional.auth_flows import login
from tests.functional.auth_flows import query_of
from tests.functional.auth_flows import s256

PATIENT_SCOPES = "launch/patient openid fhirUser offline_access patient/*.cruds"


def _verifier() -> str:
    return secrets.token_urlsafe(48)


def _seed(fhir: Any) -> dict[str, Any]:
    """Two patients, each with a survey and a laboratory Observation; one Practitioner."""
    ids: dict[str, Any] = {}
    for name in ("mine", "other"):
        p = fhir.create({"resourceType": "Patient", "name": [{"family": name}]})
        ids[name] = p["id"]
        for cat in ("survey", "laboratory"):
            o = fhir.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": cat},
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": cat,
                                }
                            ]
                        }
                    ],
                    "subject": {"reference": f"Patient/{p['id']}"},
                }
            )
            ids[f"{name}-{cat}"] = o["id"]
    ids["practitioner"] = fhir.create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})["id"]
    return ids


def _patient_token(app: Any, fhir: Any, scope: str = PATIENT_SCOPES) -> tuple[dict[str, Any], dict[str, Any]]:
    ids = _seed(fhir)
    add_user(app, "pat", "patient", f"Patient/{ids['mine']}")
    client_id, _ = add_app(app, scope)
    verifier = _verifier()
    c = app.test_client()
    params = authorize_params(client_id, scope, verifier)
    got = get_code(c, params, "pat")
    assert got["state"] == params["state"]
    r = exchange(c, client_id, got["code"], verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Cache-Control"] == "no-store"
    return ids, {**r.get_json(), "client_id": client_id}


def test_standalone_patient_launch(app: Any, fhir: Any) -> None:
    ids, tok = _patient_token(app, fhir)
    assert tok["patient"] == ids["mine"] and tok["token_type"] == "Bearer" and tok["expires_in"] > 0
    assert set(tok["scope"].split()) == set(PATIENT_SCOPES.split())
    keys = KeySet.import_key_set(app.test_client().get("/.well-known/jwks.json").get_json())
    claims = jwt.decode(tok["access_token"], keys, algorithms=["RS256"]).claims
    assert claims["patient"] == ids["mine"] and claims["fhirUser"] == f"Patient/{ids['mine']}"
    assert claims["client_id"] == tok["client_id"] and claims["aud"] == BASE
    id_token = jwt.decode(tok["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256" and id_token.claims["aud"] == tok["client_id"]
    assert id_token.claims["fhirUser"] == f"{BASE}/Patient/{ids['mine']}"


def test_patient_scope_confines_to_the_compartment(app: Any, fhir: Any) -> None:
    ids, tok = _patient_token(app, fhir)
    c, h = app.test_client(), bearer(tok["access_token"])
    assert c.get(f"/Patient/{ids['mine']}", headers=h).status_code == 200
    r = c.get(f"/Patient/{ids['other']}", headers=h)
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"
    assert c.get(f"/Observation/{ids['other-survey']}", headers=h).status_code == 404
    assert c.get(f"/Observation/{ids['other-survey']}/_history/1", headers=h).status_code == 404
    assert c.get(f"/Observation/{ids['other-survey']}/_history", headers=h).status_code == 404
    found = c.get("/Observation", headers=h).get_json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(
        [ids["mine-survey"], ids["mine-laboratory"]]
    )
    assert [e["resource"]["id"] for e in c.get("/Patient", headers=h).get_json()["entry"]] == [ids["mine"]]
    # _revinclude / _include never bring in the other patient's data.
    r = c.get(f"/Practitioner?_revinclude=Observation:subject&_id={ids['practitioner']}", headers=h)
    assert r.status_code == 200
    r = c.get("/Observation?_include=Observation:subject", headers=h).get_json()
    assert {e["resource"]["id"] for e in r["entry"] if e["resource"]["resourceType"] == "Patient"} == {
        ids["mine"]
    }
    # Compartment search of another patient, history, system search.
    assert c.get(f"/Patient/{ids['other']}/Observation", headers=h).status_code == 404
    history = c.get("/Observation/_history", headers=h).get_json()
    assert {e["resource"]["subject"]["reference"] for e in history["entry"]} == {f"Patient/{ids['mine']}"}
    everything = c.get("/_history", headers=h).get_json()
    assert ids["other"] not in {e["resource"]["id"] for e in everything["entry"]}
    # Not patient data: Practitioner is readable with patient/*.
    assert c.get(f"/Practitioner/{ids['practitioner']}", headers=h).status_code == 200
    # Writes must stay in the compartment.
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{ids['other']}"},
    }
    r = c.post("/Observation", json=obs, headers={**h, "Content-Type": "application/fhir+json"})
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    obs["subject"]["reference"] = f"Patient/{ids['mine']}"
    assert (
        c.post("/Observation", json=obs, headers={**h, "Content-Type": "application/fhir+json"}).status_code
        == 201
    )
    assert c.delete(f"/Observation/{ids['other-laboratory']}", headers=h).status_code == 404
    assert c.get(f"/Patient/{ids['other']}/$everything", headers=h).status_code == 404


def test_parameter_restricted_and_v1_scopes(app: Any, fhir: Any) -> None:
    scope = (
        "launch/patient patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
        "observation-category|survey patient/Patient.read"
    )
    ids, tok = _patient_token(app, fhir, scope)
    c, h = app.test_client(), bearer(tok["access_token"])
    found = c.get("/Observation", headers=h).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids["mine-survey"]]
    assert c.get(f"/Observation/{ids['mine-survey']}", headers=h).status_code == 200
    assert c.get(f"/Observation/{ids['mine-laboratory']}", headers=h).status_code == 404
    assert c.get(f"/Patient/{ids['mine']}", headers=h).status_code == 200
    r = c.put(
        f"/Patient/{ids['mine']}",
        json={"resourceType": "Patient", "id": ids["mine"]},
        headers={**h, "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 403  # .read is rs only
    assert c.get("/Condition", headers=h).status_code == 403


def test_practitioner_picks_the_patient(app: Any, fhir: Any) -> None:
    ids = _seed(fhir)
    add_user(app, "doc", "practitioner", f"Practitioner/{ids['practitioner']}")
    # A practitioner names the clinical types (a wildcard would include AuditEvent: auth/roles.py).
    scope = "launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs"
    client_id, _ = add_app(app, scope)
    verifier = _verifier()
    c = app.test_client()
    r = c.get("/auth/authorize", query_string=authorize_params(client_id, scope, verifier))
    r = login(c, r.get_data(as_text=True), "doc")
    picker = r.get_data(as_text=True)
    assert 'value="pick"' in picker and ids["other"] in picker and "mine" in picker
    r = c.post(
        "/auth/authorize",
        data={"step": "pick", "csrf_token": hidden(picker, "csrf_token"), "patient": ids["other"]},
    )
    consent = r.get_data(as_text=True)
    assert (
        "Rehab Tracker" in consent and "Read, search Observation records of the selected patient" in consent
    )
    r = c.post(
        "/auth/authorize",
        data={"step": "consent", "csrf_token": hidden(consent, "csrf_token"), "decision": "approve"},
    )
    tok = exchange(c, client_id, query_of(r.headers["Location"])["code"], verifier).get_json()
    assert tok["patient"] == ids["other"]
    assert c.get(f"/Patient/{ids['mine']}", headers=bearer(tok["access_token"])).status_code == 404
    assert c.get(f"/Patient/{ids['other']}", headers=bearer(tok["access_token"])).status_code == 200


def test_ehr_launch_uses_the_registered_context(app: Any, fhir: Any) -> None:
    ids = _seed(fhir)
    add_user(app, "doc", "practitioner", f"Practitioner/{ids['practitioner']}")
    scope = "launch patient/Patient.rs"
    client_id, _ = add_app(app, scope)
    launch = ext(app).store.add_launch(ids["mine"])
    verifier = _verifier()
    c = app.test_client()
    got = get_code(c, authorize_params(client_id, scope, verifier, launch=launch), "doc")
    tok = exchange(c, client_id, got["code"], verifier).get_json()
    assert tok["patient"] == ids["mine"]
    got = get_code(c, authorize_params(client_id, scope, verifier, launch="unknown"), "doc")
    assert got["error"] == "invalid_request" and "launch" in got["error_description"]


def test_authorize_request_errors(app: Any) -> None:
    client_id, _ = add_app(app, "patient/*.rs launch/patient")
    conf_id, _ = add_app(app, "patient/*.rs launch/patient", kind="symmetric")
    c = app.test_client()
    v = _verifier()
    cases = {
        "plain PKCE": (
            authorize_params(client_id, "patient/*.rs", v, code_challenge_method="plain", code_challenge=v),
            "invalid_request",
        ),
        "no PKCE (public)": (
            {
                **authorize_params(client_id, "patient/*.rs", v),
                "code_challenge": "",
                "code_challenge_method": "",
            },
            "invalid_request",
        ),
        "no PKCE (confidential)": (
            {
                **authorize_params(conf_id, "patient/*.rs", v),
                "code_challenge": "",
                "code_challenge_method": "",
            },
            "invalid_request",
        ),
        "wrong aud": (
            authorize_params(client_id, "patient/*.rs", v, aud="https://evil.example/fhir"),
            "invalid_request",
        ),
        "token response type": (
            authorize_params(client_id, "patient/*.rs", v, response_type="token"),
            "unsupported_response_type",
        ),
        "scope not allowed": (authorize_params(client_id, "user/*.cruds", v), "invalid_scope"),
    }
    for name, (params, error) in cases.items():
        r = c.get("/auth/authorize", query_string=params)
        assert r.status_code == 302, name
        got = query_of(r.headers["Location"])
        assert r.headers["Location"].startswith(REDIRECT) and got["error"] == error, name
        assert got["state"] == params["state"], name
    r = c.get(
        "/auth/authorize",
        query_string=authorize_params(client_id, "patient/*.rs", v, redirect_uri="https://evil.example/cb"),
    )
    assert r.status_code == 400 and "Location" not in r.headers
    r = c.get("/auth/authorize", query_string=authorize_params("nobody", "patient/*.rs", v))
    assert r.status_code == 400


def test_pkce_verifier_is_checked_for_every_client(app: Any, fhir: Any) -> None:
    ids = _seed(fhir)
    add_user(app, "pat", "patient", f"Patient/{ids['mine']}")
    scope = "launch/patient patient/*.rs"
    public_id, _ = add_app(app, scope)
    conf_id, secret = add_app(app, scope, kind="symmetric")
    c = app.test_client()
    for client_id, extra in ((public_id, {}), (conf_id, {"client_secret": secret or ""})):
        for bad in (None, "", "x" * 50, "challenge"):
            v = _verifier()
            got = get_code(c, authorize_params(client_id, scope, v), "pat")
            verifier = s256(v) if bad == "challenge" else bad  # "challenge": the plain downgrade
            r = exchange(c, client_id, got["code"], verifier, **extra)
            assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant", (client_id, bad)
        v = _verifier()
        got = get_code(c, authorize_params(client_id, scope, v), "pat")
        assert exchange(c, client_id, got["code"], v, **extra).status_code == 200


def test_code_is_single_use_bound_and_short_lived(app: Any, fhir: Any) -> None:
    ids = _seed(fhir)
    add_user(app, "pat", "patient", f"Patient/{ids['mine']}")
    scope = "launch/patient offline_access patient/*.rs"
    client_id, _ = add_app(app, scope)
    other_id, _ = add_app(app, scope)
    c = app.test_client()
    v = _verifier()
    code = get_code(c, authorize_params(client_id, scope, v), "pat")["code"]
    first = exchange(c, client_id, code, v)
    assert first.status_code == 200
    replay = exchange(c, client_id, code, v)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    # The replay revoked what the code issued: the access and refresh tokens.
    r = c.get(f"/Patient/{ids['mine']}", headers=bearer(first.get_json()["access_token"]))
    assert r.status_code == 401 and "revoked" in r.get_json()["issue"][0]["diagnostics"]
    r = c.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": first.get_json()["refresh_token"],
        },
    )
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    code = get_code(c, authorize_params(client_id, scope, v), "pat")["code"]
    assert exchange(c, other_id, code, v).get_json()["error"] == "invalid_grant"
    code = get_code(c, authorize_params(client_id, scope, v), "pat")["code"]
    assert (
        exchange(c, client_id, code, v, redirect_uri=REDIRECT + "/x").get_json()["error"] == "invalid_grant"
    )
    code = get_code(c, authorize_params(client_id, scope, v), "pat")["code"]
    with app.extensions["rehabfhir.sessions"]() as session:
        session.execute(sa.update(AuthCode).values(expires_at=now() - timedelta(seconds=1)))
        session.commit()
    r = exchange(c, client_id, code, v)
    assert r.status_code == 400 and "expired" in r.get_json()["error_description"]
    assert exchange(c, client_id, "made-up", v).get_json()["error"] == "invalid_grant"


def test_refresh_rotates_and_reuse_revokes_the_family(app: Any, fhir: Any) -> None:
    ids, tok = _patient_token(app, fhir)
    c = app.test_client()

    def refresh(token: str, **extra: str) -> Any:
        return c.post(
            "/auth/token",
            data={
                "grant_type": "refresh_token",
                "client_id": tok["client_id"],
                "refresh_token": token,
                **extra,
            },
        )

    second = refresh(tok["refresh_token"], scope="patient/*.cruds offline_access launch/patient")
    assert second.status_code == 200 and second.headers["Cache-Control"] == "no-store"
    body = second.get_json()
    assert body["refresh_token"] != tok["refresh_token"] and body["patient"] == ids["mine"]
    narrowed = refresh(body["refresh_token"], scope="patient/Observation.rs offline_access launch/patient")
    assert narrowed.status_code == 200 and "patient/*.cruds" not in narrowed.get_json()["scope"]
    wider = refresh(narrowed.get_json()["refresh_token"], scope="patient/*.cruds offline_access")
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"
    # Reusing an already rotated refresh token revokes the whole family.
    reuse = refresh(tok["refresh_token"])
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    assert refresh(narrowed.get_json()["refresh_token"]).status_code == 400
    r = c.get(f"/Patient/{ids['mine']}", headers=bearer(narrowed.get_json()["access_token"]))
    assert r.status_code == 401


def test_revoking_a_refresh_token(app: Any, fhir: Any) -> None:
    _, tok = _patient_token(app, fhir)
    c = app.test_client()
    r = c.post("/auth/revoke", data={"token": tok["refresh_token"], "client_id": tok["client_id"]})
    assert r.status_code == 200
    r = c.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": tok["client_id"],
            "refresh_token": tok["refresh_token"],
        },
    )
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    assert c.get("/Observation", headers=bearer(tok["access_token"])).status_code == 401


def test_login_page_csrf_rate_limit_and_deny(app: Any, fhir: Any) -> None:
    ids = _seed(fhir)
    add_user(app, "pat", "patient", f"Patient/{ids['mine']}")
    scope = "launch/patient patient/*.rs"
    client_id, _ = add_app(app, scope)
    c = app.test_client()
    params = authorize_params(client_id, scope, _verifier())
    page = c.get("/auth/authorize", query_string=params).get_data(as_text=True)
    assert 'name="username"' in page and 'name="password"' in page and "Rehab Tracker" in page
    r = c.post(
        "/auth/authorize",
        data={"step": "login", "csrf_token": "forged", "username": "pat", "password": PASSWORD},
    )
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True).lower()
    csrf = hidden(page, "csrf_token")
    statuses = [
        c.post(
            "/auth/authorize",
            data={"step": "login", "csrf_token": csrf, "username": "pat", "password": "wrong"},
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    ext(app).login_limiter.reset()
    got = get_code(app.test_client(), params, "pat", decision="deny")
    assert got["error"] == "access_denied" and got["state"] == params["state"]
