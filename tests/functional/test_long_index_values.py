"""Index values longer than their column (a quantity's code or unit, varchar(64)) are stored cut.

PostgreSQL refused them (value too long for type character varying(64)): the create of an
Observation whose unit display is a 67-character phrase answered 500. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FhirClient

LONG_UNIT = "milliliters per minute per 1.73 square meters of body surface area"
QUANTITIES = {
    "unit": {"value": 7.25, "unit": LONG_UNIT},
    "code": {"value": 7.25, "system": "http://example.org/units", "code": "c" * 80},
    "ucum-annotation": {
        "value": 7.25,
        "system": "http://unitsofmeasure.org",
        "code": "mL/min/{" + "x" * 70 + "}",
    },
}


@pytest.mark.parametrize("case", sorted(QUANTITIES))
def test_a_quantity_with_a_long_code_or_unit_is_stored_and_searchable(fhir: FhirClient, case: str) -> None:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": f"long {case}"},
        "valueQuantity": QUANTITIES[case],
        "component": [{"code": {"text": "c"}, "valueQuantity": QUANTITIES[case]}],
    }
    created = fhir.call("POST", "/Observation", observation)
    assert created.status_code == 201, created.get_data(as_text=True)
    found = fhir.call("GET", "/Observation?value-quantity=7.25&combo-value-quantity=7.25")
    assert found.status_code == 200
    ids = [e["resource"]["id"] for e in found.get_json().get("entry", [])]
    assert ids == [created.get_json()["id"]]


def test_a_reference_whose_id_no_resource_can_have_is_kept_as_written(fhir: FhirClient) -> None:
    """`Patient/` + 100 characters names no resource (ids are 1-64 characters): it is indexed as the
    URL as written, in no compartment, and found by the same text; PostgreSQL answered 500 before
    (the 64-character target id column)."""
    long = "Patient/" + "a" * 100
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": long},
    }
    created = fhir.call("POST", "/Observation", observation)
    assert created.status_code == 201, created.get_data(as_text=True)
    found = fhir.call("GET", f"/Observation?subject={long}").get_json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [created.get_json()["id"]]
    assert fhir.call("GET", f"/Patient/{'a' * 100}/Observation").status_code == 400
