"""Request bodies whose shape would hold a worker (issue 15 item 6) are refused before any model is built."""

from __future__ import annotations

import time

from tests.conftest import FhirClient


def _outcome(resp: object, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.get_data(as_text=True)  # type: ignore[attr-defined]
    body = resp.get_json(force=True)  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code, body
    return body["issue"][0]  # type: ignore[no-any-return]


def test_patient_with_150k_names_is_413_quickly_and_nothing_is_stored(fhir: FhirClient) -> None:
    body = {"resourceType": "Patient", "id": "many-names", "name": [{"family": "x"}] * 150_000}
    start = time.process_time()
    resp = fhir.call("PUT", "/Patient/many-names", body)
    assert time.process_time() - start < 2.0  # was 9-15 s of a worker (issue 15 item 6)
    issue = _outcome(resp, 413, "too-costly")
    assert issue["expression"] == ["Patient.name"]
    assert fhir.call("GET", "/Patient/many-names").status_code == 404


def test_transaction_with_a_huge_array_is_413_naming_the_entry(fhir: FhirClient) -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["a"] * 20_000}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}],
    }
    issue = _outcome(fhir.call("POST", "/", bundle), 413, "too-costly")
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].given"]


def test_deep_nesting_is_400_structure(fhir: FhirClient) -> None:
    deep: object = {"url": "http://example.org/x", "valueString": "y"}
    for _ in range(120):
        deep = {"url": "http://example.org/x", "extension": [deep]}
    issue = _outcome(
        fhir.call("POST", "/Patient", {"resourceType": "Patient", "extension": [deep]}), 400, "structure"
    )
    assert str(issue["expression"][0]).startswith("Patient.extension[0].extension[0]")  # type: ignore[index]


def test_ordinary_bodies_still_pass(fhir: FhirClient) -> None:
    resp = fhir.call(
        "POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "Ng", "given": ["A", "B"]}]}
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
