"""$validate at type and instance level: modes, Parameters or bare body, every error with its path."""

from __future__ import annotations

from tests.conftest import FhirClient

BAD_OBS = {
    "resourceType": "Observation",
    "status": "final",
    "effectiveDateTime": "not-a-date",
    "code": {"text": "x"},
    "valueQuantity": {"value": "high"},
    "subject": {"reference": 7},
}


def _params(resource: dict, mode: str | None = None) -> dict:
    parts = [{"name": "resource", "resource": resource}]
    if mode:
        parts.append({"name": "mode", "valueCode": mode})
    return {"resourceType": "Parameters", "parameter": parts}


def test_valid_resource_bare_and_in_parameters(fhir: FhirClient) -> None:
    good = {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Valid</div>'},
        "name": [{"family": "Valid"}],
    }  # with narrative: no dom-6 best-practice warning
    for body in (good, _params(good, "create")):
        r = fhir.call("POST", "/Patient/$validate", body)
        assert r.status_code == 200, r.get_data(as_text=True)
        oo = r.get_json()
        assert oo["resourceType"] == "OperationOutcome"
        assert [i["severity"] for i in oo["issue"]] == ["information"]
    assert fhir.call("GET", "/Patient?_summary=count").get_json()["total"] == 0  # nothing stored


def test_every_error_with_its_path(fhir: FhirClient) -> None:
    r = fhir.call("POST", "/Observation/$validate", _params(BAD_OBS))
    assert r.status_code == 200
    issues = r.get_json()["issue"]
    errors = [i for i in issues if i["severity"] == "error"]
    paths = {i["expression"][0] for i in errors}
    assert len(errors) >= 3
    assert {"Observation.effectiveDateTime", "Observation.subject.reference"} <= paths
    assert any(p.startswith("Observation.valueQuantity") for p in paths)
    assert all(i["diagnostics"] for i in errors)


def test_type_mismatch_and_bad_mode(fhir: FhirClient) -> None:
    r = fhir.call("POST", "/Patient/$validate", {"resourceType": "Observation"})
    assert r.status_code == 200
    assert r.get_json()["issue"][0]["expression"] == ["resourceType"]
    r = fhir.call("POST", "/Patient/$validate?mode=explode", {"resourceType": "Patient"})
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "invalid"
    r = fhir.call("POST", "/Patient/$validate", {"resourceType": "Parameters", "parameter": []})
    assert r.status_code == 400
    r = fhir.call("POST", "/Nonsense/$validate", {"resourceType": "Patient"})
    assert r.status_code == 404
    r = fhir.call("POST", "/Patient/$validate", b"{not json")
    assert r.status_code == 400


def test_instance_update_and_delete_modes(fhir: FhirClient) -> None:
    pat = fhir.create({"resourceType": "Patient"})
    pid = pat["id"]
    r = fhir.call("POST", f"/Patient/{pid}/$validate", _params({**pat, "gender": "female"}, "update"))
    assert r.status_code == 200 and r.get_json()["issue"][0]["severity"] == "information"
    r = fhir.call("POST", f"/Patient/{pid}/$validate", _params({**pat, "id": "other"}, "update"))
    issue = r.get_json()["issue"][0]
    assert issue["severity"] == "error" and issue["expression"] == ["Patient.id"]
    r = fhir.call("POST", "/Patient/$validate?mode=update", {"resourceType": "Patient"})
    assert r.get_json()["issue"][0]["code"] == "required"
    r = fhir.call("POST", f"/Patient/{pid}/$validate?mode=delete")
    assert r.status_code == 200 and r.get_json()["issue"][0]["severity"] == "information"
    r = fhir.call("POST", "/Patient/missing/$validate?mode=delete")
    assert r.status_code == 404
    r = fhir.call("POST", "/Patient/$validate?mode=delete")
    assert r.status_code == 400
    assert fhir.call("GET", f"/Patient/{pid}").get_json()["meta"]["versionId"] == "1"
