"""Validation to the specification on every write: bindings, invariants, reference target types."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import FhirClient
from tests.functional.test_examples import INVALID_EXAMPLES
from tests.functional.test_examples import KNOWN_INVALID

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "knee flexion"}}
BAD = [
    ({**OBS, "status": "bogus"}, "Observation.status", "code-invalid"),
    ({"resourceType": "Patient", "gender": "nonsense"}, "Patient.gender", "code-invalid"),
    (
        {
            "resourceType": "Goal",
            "lifecycleStatus": "not-a-status",
            "description": {"text": "walk"},
            "subject": {"reference": "Patient/p1"},
        },
        "Goal.lifecycleStatus",
        "code-invalid",
    ),
    ({**OBS, "valueString": "x", "dataAbsentReason": {"text": "n/a"}}, "Observation", "invariant"),
    ({**OBS, "subject": {"reference": "Encounter/e1"}}, "Observation.subject", "invalid"),
]
IDS = ["obs-status", "gender", "goal-lifecycle", "obs-6", "subject-type"]


def count(fhir: FhirClient, type_: str) -> int:
    return int(fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"])


def assert_refused(r: Any, path: str, code: str) -> None:
    # R4B http.html: "400 Bad Request - ... failed basic FHIR validation rules" (422: profiles, rules)
    assert r.status_code == 400, r.get_data(as_text=True)
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["expression"][-1] == path
    assert [i["code"] for i in oo["issue"][1:]] == [code]
    assert oo["issue"][1]["expression"] == [path]


@pytest.mark.parametrize(("resource", "path", "code"), BAD, ids=IDS)
def test_create_and_update_refused(fhir: FhirClient, resource: dict[str, Any], path: str, code: str) -> None:
    type_ = resource["resourceType"]
    assert_refused(fhir.call("POST", f"/{type_}", resource), path, code)
    assert_refused(fhir.call("PUT", f"/{type_}/v1", {**resource, "id": "v1"}), path, code)
    assert count(fhir, type_) == 0


def test_patch_checked_after_applying(fhir: FhirClient) -> None:
    obs = fhir.create(OBS)
    ops = [{"op": "replace", "path": "/status", "value": "bogus"}]
    r = fhir.call("PATCH", f"/Observation/{obs['id']}", ops, content_type="application/json-patch+json")
    assert_refused(r, "Observation.status", "code-invalid")
    assert fhir.call("GET", f"/Observation/{obs['id']}").get_json()["status"] == "final"


def _entry(resource: dict[str, Any], full_url: str) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def test_transaction_fails_whole_naming_the_entry(fhir: FhirClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry(
                {"resourceType": "Patient", "name": [{"family": "Ok"}]},
                "urn:uuid:00000000-0000-0000-0000-000000000001",
            ),
            _entry(
                {"resourceType": "Patient", "gender": "nonsense"},
                "urn:uuid:00000000-0000-0000-0000-000000000002",
            ),
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 400
    first = r.get_json()["issue"][0]
    assert first["expression"] == ["Bundle.entry[1]", "Patient.gender"]
    assert "Bundle.entry[1]" in first["diagnostics"]
    assert count(fhir, "Patient") == 0


def test_batch_fails_only_that_entry(fhir: FhirClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            _entry(
                {"resourceType": "Patient", "name": [{"family": "Ok"}]},
                "urn:uuid:00000000-0000-0000-0000-000000000003",
            ),
            _entry({**OBS, "status": "bogus"}, "urn:uuid:00000000-0000-0000-0000-000000000004"),
        ],
    }
    out = fhir.call("POST", "/", bundle).get_json()
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "400 Bad Request"]
    outcome = out["entry"][1]["response"]["outcome"]
    assert outcome["issue"][1]["expression"] == ["Observation.status"]
    assert count(fhir, "Patient") == 1 and count(fhir, "Observation") == 0


def test_transaction_patch_entry_checked(fhir: FhirClient) -> None:
    obs = fhir.create(OBS)
    patch = [{"op": "replace", "path": "/status", "value": "bogus"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(patch).encode()).decode(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{obs['id']}"}}],
    }
    assert fhir.call("POST", "/", bundle).status_code == 400


@pytest.mark.parametrize(("resource", "path", "code"), BAD, ids=IDS)
def test_validate_reports_errors(fhir: FhirClient, resource: dict[str, Any], path: str, code: str) -> None:
    r = fhir.call("POST", f"/{resource['resourceType']}/$validate", resource)
    assert r.status_code == 200
    errors = [i for i in r.get_json()["issue"] if i["severity"] == "error"]
    assert [(i["code"], i["expression"]) for i in errors] == [(code, [path])]


def test_validate_reports_warnings_that_writes_accept(fhir: FhirClient) -> None:
    obs = {**OBS, "category": [{"coding": [{"system": "http://example.org/cat", "code": "zzz"}]}]}
    r = fhir.call("POST", "/Observation/$validate", obs)
    issues = r.get_json()["issue"]
    assert issues[0]["severity"] == "information"
    warnings = {(i["code"], i["expression"][0]) for i in issues if i["severity"] == "warning"}
    assert warnings == {("code-invalid", "Observation.category[0]"), ("invariant", "Observation")}
    assert fhir.call("POST", "/Observation", obs).status_code == 201


def test_known_invalid_official_examples_refused_for_their_rule(fhir: FhirClient) -> None:
    assert {(d["resourceType"], d["id"]) for d in INVALID_EXAMPLES} <= set(KNOWN_INVALID)
    for doc in INVALID_EXAMPLES:
        r = fhir.call("PUT", f"/{doc['resourceType']}/{doc['id']}", doc)
        assert r.status_code == 400, (doc["id"], r.status_code)
        rule = KNOWN_INVALID[(doc["resourceType"], doc["id"])]
        details = [i.get("details", {}).get("coding", [{}])[0].get("code") for i in r.get_json()["issue"]]
        texts = [i["diagnostics"] for i in r.get_json()["issue"][1:]]
        assert rule in details or any(t.startswith(f"{rule}:") for t in texts), (doc["id"], texts)
