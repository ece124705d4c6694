"""Search index rows derived from resources (no database)."""

from __future__ import annotations

import json
import pathlib
import tarfile
from datetime import datetime
from decimal import Decimal

import pytest

from server.errors import InvalidRequestError
from server.fhir.search.indexer import DATE_MAX
from server.fhir.search.indexer import DATE_MIN
from server.fhir.search.indexer import DateRow
from server.fhir.search.indexer import IndexRows
from server.fhir.search.indexer import ReferenceRow
from server.fhir.search.indexer import StringRow
from server.fhir.search.indexer import TokenRow
from server.fhir.search.indexer import UriRow
from server.fhir.search.indexer import compartments_of
from server.fhir.search.indexer import composite_param
from server.fhir.search.indexer import index_resource
from server.fhir.search.indexer import normalize_string
from server.fhir.search.indexer import parse_date_range
from server.fhir.search.indexer import parse_reference
from server.fhir.search.ucum import canonical
from tests.fhir_packages import package

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "examples"


def load(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def rows_of(rows: IndexRows, param: str) -> list:
    return [
        r
        for table in (
            rows.tokens,
            rows.strings,
            rows.dates,
            rows.numbers,
            rows.quantities,
            rows.references,
            rows.uris,
        )
        for r in table
        if r.param == param
    ]


def test_observation_code_subject_date_and_quantity() -> None:
    rows = index_resource(load("Observation-body-temperature"))
    assert rows_of(rows, "code") == [TokenRow("code", "http://loinc.org", "8310-5", "body temperature")]
    assert rows_of(rows, "subject") == [ReferenceRow("subject", "Patient", "example", None)]
    assert rows_of(rows, "patient") == [ReferenceRow("patient", "Patient", "example", None)]
    assert rows_of(rows, "date") == [DateRow("date", datetime(1999, 7, 2), datetime(1999, 7, 3))]
    (quantity,) = rows_of(rows, "value-quantity")
    assert quantity.value == Decimal("36.5")
    assert (quantity.system, quantity.code, quantity.unit) == ("http://unitsofmeasure.org", "Cel", "C")
    assert (quantity.canon_value, quantity.canon_code) == (pytest.approx(309.65), "K")
    assert rows_of(rows, "_tag")[0].code == "HTEST"
    assert rows_of(rows, "_profile") == [
        UriRow("_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns")
    ]
    assert rows_of(rows, "_id") == [] and rows_of(rows, "_lastUpdated") == []


def test_observation_pounds_canonicalise_to_grams() -> None:
    (quantity,) = rows_of(index_resource(load("Observation-example")), "value-quantity")
    assert quantity.code == "[lb_av]"
    assert quantity.canon_code == "g"
    assert quantity.canon_value == pytest.approx(185 * 453.59237)


def test_observation_components_are_grouped_per_occurrence() -> None:
    rows = index_resource(load("Observation-blood-pressure"))
    code_param = composite_param("component-code-value-quantity", 0)
    value_param = composite_param("component-code-value-quantity", 1)
    systolic = {r.group for r in rows.tokens if r.param == code_param and r.code == "8480-6"}
    diastolic = {r.group for r in rows.tokens if r.param == code_param and r.code == "8462-4"}
    assert len(systolic) == 1 and len(diastolic) == 1 and systolic != diastolic
    values = {r.group: r.value for r in rows.quantities if r.param == value_param}
    assert values[systolic.pop()] == Decimal("107")
    assert values[diastolic.pop()] == Decimal("60")
    # The panel has no value of its own: no half-filled code-value-quantity occurrence.
    assert rows_of(rows, composite_param("code-value-quantity", 0)) == []
    component_codes = {r.code for r in rows_of(rows, "component-code")}
    assert {"8480-6", "8462-4"} <= component_codes
    assert all(r.group is None for r in rows_of(rows, "component-code"))
    assert rows_of(rows, "based-on:identifier") == [
        TokenRow("based-on:identifier", "https://acme.org/identifiers", "1234", None)
    ]


def test_patient_name_birthdate_identifier_and_of_type() -> None:
    patient = load("Patient-example")
    rows = index_resource(patient)
    family = {r.exact for r in rows_of(rows, "family")}
    assert family == {"Chalmers", "Windsor"}
    assert StringRow("given", "jim", "Jim") in rows.strings
    assert StringRow("address-city", "pleasantville", "PleasantVille") in rows.strings
    assert rows_of(rows, "birthdate") == [
        DateRow("birthdate", datetime(1974, 12, 25), datetime(1974, 12, 26))
    ]
    assert TokenRow("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", None) in rows.tokens
    assert rows_of(rows, "identifier:of-type") == [
        TokenRow("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203", "MR|12345", None)
    ]
    assert TokenRow("gender", None, "male", None) in rows.tokens
    assert TokenRow("active", None, "true", None) in rows.tokens
    assert TokenRow("deceased", None, "false", None) in rows.tokens
    assert TokenRow("phone", None, "(03) 5555 6473", None) in rows.tokens
    assert rows_of(rows, "organization") == [ReferenceRow("organization", "Organization", "1", None)]
    assert compartments_of(patient) == [("Patient", "example")]


def test_encounter_period_in_utc() -> None:
    encounter = load("Encounter-home")
    rows = index_resource(encounter)
    assert rows_of(rows, "date") == [
        DateRow("date", datetime(2015, 1, 17, 6, 0), datetime(2015, 1, 17, 6, 30, 1))
    ]
    assert ("Encounter", "home") in compartments_of(encounter)
    assert ("Patient", "example") in compartments_of(encounter)


def test_careplan_open_period_contained_reference_and_uri() -> None:
    careplan = load("CarePlan-example")
    rows = index_resource(careplan)
    assert rows_of(rows, "date") == [DateRow("date", DATE_MIN, datetime(2017, 6, 2))]
    assert rows_of(rows, "condition") == [ReferenceRow("condition", None, None, "#p1")]
    assert UriRow("instantiates-uri", "http://example.org/protocol-for-obesity") in rows.uris
    assert {r.code for r in rows_of(rows, "activity-code")} == {"3141-9", "27113001"}
    assert compartments_of(careplan) == [("Patient", "example"), ("Encounter", "home")]


def test_goal_dates_and_codeable_concept_text() -> None:
    rows = index_resource(load("Goal-stop-smoking"))
    assert rows_of(rows, "start-date") == [DateRow("start-date", datetime(2015, 4, 5), datetime(2015, 4, 6))]
    assert rows_of(rows, "achievement-status") == [
        TokenRow(
            "achievement-status",
            "http://terminology.hl7.org/CodeSystem/goal-achievement",
            "achieved",
            "achieved",
        )
    ]
    assert TokenRow("lifecycle-status", None, "completed", None) in rows.tokens


def test_medication_request_references_and_compartments() -> None:
    request = load("MedicationRequest-medrx0303")
    rows = index_resource(request)
    assert rows_of(rows, "authoredon") == [
        DateRow("authoredon", datetime(2015, 1, 15), datetime(2015, 1, 16))
    ]
    assert rows_of(rows, "medication") == [ReferenceRow("medication", None, None, "#med0311")]
    assert rows_of(rows, "requester") == [ReferenceRow("requester", "Practitioner", "f007", None)]
    assert compartments_of(request) == [("Patient", "pat1"), ("Encounter", "f001"), ("Practitioner", "f007")]


def test_timing_events_and_bounds() -> None:
    rows = index_resource(
        {
            "resourceType": "CarePlan",
            "id": "t",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/1"},
            "activity": [
                {
                    "detail": {
                        "status": "scheduled",
                        "scheduledTiming": {
                            "event": ["2021-03-04T10:00:00Z"],
                            "repeat": {"boundsPeriod": {"start": "2021-03-01", "end": "2021-03-31"}},
                        },
                    }
                }
            ],
        }
    )
    assert rows_of(rows, "activity-date") == [
        DateRow("activity-date", datetime(2021, 3, 4, 10), datetime(2021, 3, 4, 10, 0, 1)),
        DateRow("activity-date", datetime(2021, 3, 1), datetime(2021, 4, 1)),
    ]


def test_range_rows_have_low_and_high_params() -> None:
    rows = index_resource(load("ActivityDefinition-administer-zika-virus-exposure-assessment"))
    (low,) = rows_of(rows, "context-quantity:low")
    assert low.value == Decimal("12") and low.unit == "a"
    assert rows_of(rows, "context-quantity:high") == []
    composite_low = rows_of(rows, composite_param("context-type-quantity", 1) + ":low")
    composite_type = rows_of(rows, composite_param("context-type-quantity", 0))
    assert composite_low[0].group is not None
    assert composite_low[0].group in {r.group for r in composite_type}


def test_number_and_money() -> None:
    rows = index_resource(load("RiskAssessment-genetic"))
    assert Decimal("0.000168") in {r.value for r in rows_of(rows, "probability")}
    claim = index_resource(
        {
            "resourceType": "ChargeItemDefinition",
            "useContext": [
                {
                    "code": {"code": "age"},
                    "valueQuantity": {"value": 3, "system": "http://unitsofmeasure.org", "code": "mo"},
                }
            ],
        }
    )
    (q,) = rows_of(claim, "context-quantity")
    assert (q.canon_value, q.canon_code) == (3 * 2629800.0, "s")


def test_canonical_reference_keeps_version_and_versionless() -> None:
    rows = index_resource(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "urn:uuid:9b1a"},
            "instantiatesCanonical": ["http://example.org/PlanDefinition/p|2.0"],
        }
    )
    assert rows_of(rows, "instantiates-canonical") == [
        ReferenceRow("instantiates-canonical", None, None, "http://example.org/PlanDefinition/p|2.0"),
        ReferenceRow("instantiates-canonical", None, None, "http://example.org/PlanDefinition/p"),
    ]
    assert rows_of(rows, "subject") == [ReferenceRow("subject", None, None, "urn:uuid:9b1a")]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123", None)),
        ("Patient/123/_history/2", ("Patient", "123", None)),
        ("http://x/fhir/Patient/123", ("Patient", "123", "http://x/fhir/Patient/123")),
        ("urn:uuid:abc", (None, None, "urn:uuid:abc")),
        ("#c1", (None, None, "#c1")),
        ("NotAType/1", (None, None, "NotAType/1")),
    ],
    ids=["relative", "versioned", "absolute", "urn", "contained", "unknown-type"],
)
def test_parse_reference(ref: str, expected: tuple) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", datetime(2020, 1, 1), datetime(2021, 1, 1)),
        ("2020-12", datetime(2020, 12, 1), datetime(2021, 1, 1)),
        ("2020-02-29", datetime(2020, 2, 29), datetime(2020, 3, 1)),
        ("2020-01-01T10:00", datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 10, 1)),
        ("2020-01-01T10:00:00", datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 10, 0, 1)),
        ("2020-01-01T10:00:00+02:00", datetime(2020, 1, 1, 8), datetime(2020, 1, 1, 8, 0, 1)),
        (
            "2020-01-01T10:00:00.123Z",
            datetime(2020, 1, 1, 10, 0, 0, 123000),
            datetime(2020, 1, 1, 10, 0, 0, 124000),
        ),
        ("9999", datetime(9999, 1, 1), DATE_MAX),
    ],
)
def test_parse_date_range(value: str, low: datetime, high: datetime) -> None:
    assert parse_date_range(value) == (low, high)


@pytest.mark.parametrize("value", ["", "x", "2020-13", "2020-02-30", "20", "2020-01-01T25:00:00"])
def test_parse_date_range_rejects_garbage(value: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_date_range(value)


def test_normalize_string() -> None:
    assert normalize_string("  Zoë  MÜLLER\tStraße ") == "zoe muller strasse"
    assert normalize_string("Ångström") == "angstrom"


def test_ucum_canonical() -> None:
    assert canonical(5, "mg") == (0.005, "g")
    assert canonical(1, "[lb_av]") == (453.59237, "g")
    assert canonical(72, "/min") == (1.2, "s-1")
    assert canonical(5, "mg/dL") == (50.0, "g.m-3")
    assert canonical(120, "mm[Hg]")[1] == canonical(16, "kPa")[1]
    assert canonical(98.6, "[degF]") == (pytest.approx(310.15), "K")
    assert canonical(90, "deg")[1] == "rad"
    assert canonical(1, "kgf")[1] == canonical(1, "[lbf_av]")[1] == canonical(1, "N")[1]
    assert canonical(1, "km/h") == (pytest.approx(1 / 3.6), "m.s-1")
    assert canonical(1, "L") == canonical(1000, "mL")
    assert canonical(50, "%") == (0.5, "1")
    assert canonical(1, "mV")[1] == canonical(1, "uV")[1]
    assert canonical(1, "[IU]") is None
    assert canonical(1, "Cel/h") is None


def _index_all(resources: list[dict]) -> int:
    for resource in resources:
        rows = index_resource(resource)
        assert isinstance(rows, IndexRows)
        for pair in compartments_of(resource):
            assert all(isinstance(x, str) and x for x in pair)
    return len(resources)


def test_index_every_fixture_example() -> None:
    resources = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob("*.json"))]
    assert _index_all(resources) >= 30


def test_index_every_official_example() -> None:
    tgz = package("hl7.fhir.r4b.examples", "4.3.0")
    assert tgz is not None, "hl7.fhir.r4b.examples@4.3.0 could not be fetched (npm pack; see .ci/run)"
    resources = []
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            if not member.name.endswith(".json") or not member.isfile():
                continue
            handle = tar.extractfile(member)
            doc = json.load(handle) if handle is not None else None
            if isinstance(doc, dict) and "resourceType" in doc:
                resources.append(doc)
    assert _index_all(resources) > 2000


def test_dates_span_open_ends() -> None:
    rows = index_resource({"resourceType": "Encounter", "status": "planned", "period": {"start": "2020-05"}})
    assert rows_of(rows, "date") == [DateRow("date", datetime(2020, 5, 1), DATE_MAX)]
