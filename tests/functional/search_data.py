"""Search test data: a selection of official R4B examples plus generated resources with known ids.

Generated resources carry the tag urn:gen|g, so queries can restrict themselves to them
with ``G`` while the official examples stay in the same database.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "examples"
OFFICIAL = (
    "Patient-example.json",
    "Patient-f001.json",
    "Practitioner-f001.json",
    "Observation-example.json",
    "Observation-blood-pressure.json",
    "Observation-bmi.json",
    "Encounter-example.json",
    "Condition-example.json",
    "ValueSet-example-extensional.json",
    "RiskAssessment-genetic.json",
)
G = "&_tag=urn:gen|g"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
TAG = {"system": "urn:gen", "code": "g"}
MARKER = ("Basic", "search-data-marker")


def _meta(*extra_tags: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"tag": [TAG, *extra_tags], **more}


def _obs(id_: str, code: str, display: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "meta": fields.pop("meta", _meta()),
        "status": fields.pop("status", "final"),
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        **fields,
    }


def _qty(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def generated() -> list[dict[str, Any]]:
    """The generated resources, in load order."""
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    return [
        {"resourceType": "Organization", "id": "org1", "meta": _meta(), "name": "Rehab Clinic"},
        {
            "resourceType": "Practitioner",
            "id": "pr1",
            "meta": _meta(),
            "name": [{"family": "Doe", "given": ["Jane"]}],
        },
        {
            "resourceType": "Patient",
            "id": "p1",
            "meta": _meta(),
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Anna</div>'},
            "identifier": [{"system": "urn:mrn", "value": "m1", "type": mr}],
            "name": [{"family": "Müller", "given": ["Anna"]}],
            "gender": "female",
            "birthDate": "1980-01-15",
            "address": [{"city": "Zürich"}],
            "generalPractitioner": [{"reference": "Practitioner/pr1"}],
            "managingOrganization": {"reference": "Organization/org1"},
        },
        {
            "resourceType": "Patient",
            "id": "p2",
            "meta": _meta(),
            "active": False,
            "identifier": [{"system": "urn:mrn", "value": "m2"}],
            "name": [{"family": "Muller-Smith", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "1990-06",
        },
        {
            "resourceType": "Patient",
            "id": "p3",
            "meta": _meta(),
            "name": [{"family": "Smith", "given": ["Carl"]}],
            "gender": "other",
            "birthDate": "2001-03-04",
        },
        {"resourceType": "Patient", "id": "p4", "meta": _meta(), "name": [{"family": "Ghost"}]},
        {
            "resourceType": "Encounter",
            "id": "e1",
            "meta": _meta(),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2024-01-01", "end": "2024-01-05"},
        },
        _obs(
            "o1",
            "29463-7",
            "Body weight",
            subject={"reference": "Patient/p1"},
            meta=_meta(
                {"system": "urn:tags", "code": "t1"},
                profile=["http://example.org/fhir/StructureDefinition/weight"],
                source="http://example.org/source/a",
            ),
            performer=[{"reference": "Practitioner/pr1"}],
            encounter={"reference": "Encounter/e1"},
            effectiveDateTime="2024-01-02T10:00:00Z",
            valueQuantity=_qty(70, "kg"),
        ),
        _obs(
            "o2",
            "29463-7",
            "Body weight",
            status="preliminary",
            subject={"reference": "Patient/p1"},
            effectivePeriod={"start": "2024-02-01", "end": "2024-02-03"},
            valueQuantity=_qty(70200, "g"),
        ),
        _obs(
            "o3",
            "8867-4",
            "Heart rate",
            subject={"reference": "Patient/p2"},
            meta=_meta(
                security=[{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
            ),
            identifier=[{"system": "urn:obs", "value": "o3"}],
            effectiveDateTime="2023-12-31T23:30:00+00:00",
            valueQuantity=_qty(80, "/min", "beats/minute"),
        ),
        _obs(
            "o4",
            "85354-9",
            "Blood pressure",
            subject={"reference": "Patient/p3"},
            effectiveDateTime="2024-01-02",
            component=[
                {
                    "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": _qty(120, "mm[Hg]"),
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                    "valueQuantity": _qty(80, "mm[Hg]"),
                },
            ],
        ),
        _obs(
            "o5",
            "72133-2",
            "Finding",
            status="amended",
            subject={"reference": "Patient/p2"},
            effectiveDateTime="2024",
            derivedFrom=[{"reference": "Observation/o1"}],
            valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]},
        ),
        _obs(
            "o6",
            "29463-7",
            "Body weight",
            subject={"identifier": {"system": "urn:mrn", "value": "m1"}},
            effectiveDateTime="2022-05-05",
            valueQuantity=_qty(5, "[lb_av]", "lb"),
        ),
        _obs(
            "o7",
            "8867-4",
            "Heart rate",
            subject={"reference": "http://other.example/fhir/Patient/x9"},
            effectiveDateTime="2021-01-01",
        ),
        {
            "resourceType": "RiskAssessment",
            "id": "ra1",
            "meta": _meta(),
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
        {
            "resourceType": "RiskAssessment",
            "id": "ra2",
            "meta": _meta(),
            "status": "final",
            "subject": {"reference": "Patient/p2"},
            "prediction": [{"probabilityDecimal": 0.8}],
        },
        {
            "resourceType": "CarePlan",
            "id": "cp1",
            "meta": _meta(),
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/p1"},
            "activity": [
                {"detail": {"status": "scheduled", "scheduledTiming": {"event": ["2024-03-01T09:00:00Z"]}}}
            ],
        },
        {
            "resourceType": "ValueSet",
            "id": "vs1",
            "meta": _meta(),
            "status": "active",
            "url": "http://example.org/fhir/ValueSet/rehab/knee",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs2",
            "meta": _meta(),
            "status": "active",
            "url": "http://example.org/fhir/ValueSet/rehab",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs3",
            "meta": _meta(),
            "status": "active",
            "url": "http://other.org/vs",
        },
    ]


def official() -> list[dict[str, Any]]:
    """The official examples used by the tables."""
    return [json.loads((EXAMPLES / name).read_text()) for name in OFFICIAL]


def load(client: Any) -> None:
    """PUT every resource (known ids), delete p4, then write the marker.

    Loaded as a bulk load is (REHABFHIR_REFERENTIAL_INTEGRITY off): the official examples refer
    to resources outside the selection; p4 is deleted although resources still refer to it.
    """
    app = client.c.application
    before = app.config["REHABFHIR_SETTINGS"]
    app.config["REHABFHIR_SETTINGS"] = dataclasses.replace(
        before, referential_integrity=False, delete_referenced=True
    )
    try:
        for resource in official() + generated():
            path = f"/{resource['resourceType']}/{resource['id']}"
            r = client.call("PUT", path, resource)
            assert r.status_code in (200, 201), (path, r.get_data(as_text=True))
        assert client.call("DELETE", "/Patient/p4").status_code == 204
    finally:
        app.config["REHABFHIR_SETTINGS"] = before
    marker = {"resourceType": "Basic", "id": MARKER[1], "code": {"text": "marker"}}
    assert client.call("PUT", f"/{MARKER[0]}/{MARKER[1]}", marker).status_code in (200, 201)
