"""Submitted AuditEvents (IHE RESTful ATNA): only a backend with system/AuditEvent.c; recorded as source."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import client_credentials_token
from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code

EVENT = {
    "resourceType": "AuditEvent",
    "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True, "who": {"display": "EHR user"}}],
    "source": {"observer": {"display": "another-system"}},
}
WRITE = {"Content-Type": "application/fhir+json"}


def _claims_client(token: str) -> str:
    from auth.server import unverified_part

    return str((unverified_part(token, 1) or {})["client_id"])


def test_backend_with_audit_create_submits_and_is_recorded_as_the_source(app: Any) -> None:
    # PUT-as-create also needs u: the update interaction asks for it.
    token = client_credentials_token(app, "system/AuditEvent.c system/AuditEvent.ru")
    client_id = _claims_client(token)
    c, h = app.test_client(), {**bearer(token), **WRITE}
    made = c.post("/AuditEvent", json=EVENT, headers=h)
    assert made.status_code == 201, made.get_data(as_text=True)
    put = c.put("/AuditEvent/ehr-evt-1", json={**EVENT, "id": "ehr-evt-1"}, headers=h)
    assert put.status_code == 201, put.get_data(as_text=True)
    for id_ in (made.get_json()["id"], "ehr-evt-1"):
        got = c.get(f"/AuditEvent/{id_}", headers=bearer(token)).get_json()
        assert got["source"]["observer"] == {
            "identifier": {"system": BASE + "/auth/clients", "value": client_id}
        }
        assert "another-system" in got["source"]["site"]  # what the submitter claimed is kept
        assert got["agent"] == EVENT["agent"] and got["type"] == EVENT["type"]


def test_an_observer_claiming_another_client_is_overridden(app: Any) -> None:
    token = client_credentials_token(app, "system/AuditEvent.cr")
    forged = {
        **EVENT,
        "source": {"observer": {"identifier": {"system": BASE + "/auth/clients", "value": "ehr"}}},
    }
    r = app.test_client().post("/AuditEvent", json=forged, headers={**bearer(token), **WRITE})
    assert r.status_code == 201
    assert r.get_json()["source"]["observer"]["identifier"]["value"] == _claims_client(token) != "ehr"


@pytest.mark.parametrize("scope", ["system/*.rs", "system/Patient.cruds", "system/AuditEvent.rs"])
def test_backend_without_audit_create_is_refused(app: Any, scope: str) -> None:
    token = client_credentials_token(app, scope)
    c, h = app.test_client(), {**bearer(token), **WRITE}
    for r in (
        c.post("/AuditEvent", json=EVENT, headers=h),
        c.put("/AuditEvent/ehr-evt-2", json={**EVENT, "id": "ehr-evt-2"}, headers=h),
    ):
        assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        ("admin", "user/*.cruds"),
        ("admin", "user/AuditEvent.cruds"),
        ("patient", "launch/patient patient/*.cruds"),
    ],
    ids=["admin user/*", "admin user/AuditEvent", "patient"],
)
def test_user_grants_may_not_submit(app: Any, fhir: Any, role: str, scope: str) -> None:
    pid = fhir.create({"resourceType": "Patient"})["id"]
    add_user(app, "u", role, f"Patient/{pid}" if role == "patient" else None)
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    tok = exchange(
        c, client_id, get_code(c, authorize_params(client_id, scope, verifier), "u")["code"], verifier
    )
    assert tok.status_code == 200, tok.get_data(as_text=True)
    h = {**bearer(tok.get_json()["access_token"]), **WRITE}
    r = c.post("/AuditEvent", json=EVENT, headers=h)
    assert r.status_code == 403 and "system/" in r.get_json()["issue"][0]["diagnostics"]
    assert c.put("/AuditEvent/ehr-evt-3", json={**EVENT, "id": "ehr-evt-3"}, headers=h).status_code == 403
