"""Bindings, invariants and reference targets of server.fhir.validation, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from server.fhir.validation import check

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def errors(type_: str, resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(first word of the diagnostics or the message id, expression) of every error."""
    out = []
    for i in check(type_, resource):
        assert i["severity"] == "error"
        key = (
            i["diagnostics"].split(":", 1)[0]
            if i["code"] == "invariant"
            else i["details"]["coding"][0]["code"]
        )
        out.append((key, i["expression"][0]))
    return out


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({**OBS, "status": "bogus"}, [("MSG_CODE_INVALID", "Observation.status")]),
        ({"resourceType": "Patient", "gender": "nonsense"}, [("MSG_CODE_INVALID", "Patient.gender")]),
        (
            {
                "resourceType": "Goal",
                "lifecycleStatus": "not-a-status",
                "description": {"text": "walk"},
                "subject": {"reference": "Patient/p"},
            },
            [("MSG_CODE_INVALID", "Goal.lifecycleStatus")],
        ),
        (
            {**OBS, "component": [{"code": {"text": "c"}, "valueQuantity": {"value": 1, "comparator": "~"}}]},
            [("MSG_CODE_INVALID", "Observation.component[0].value.ofType(Quantity).comparator")],
        ),
        (
            {"resourceType": "Patient", "contact": [{"name": {"family": "X", "use": "nickname-ish"}}]},
            [("MSG_CODE_INVALID", "Patient.contact[0].name.use")],
        ),
        (
            # required binding on a CodeableConcept: AllergyIntolerance.clinicalStatus
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/p"},
                "clinicalStatus": {"coding": [{"system": "http://example.org", "code": "active"}]},
            },
            [("MSG_CODE_INVALID", "AllergyIntolerance.clinicalStatus")],
        ),
        ({**OBS, "valueString": "x", "dataAbsentReason": {"text": "n/a"}}, [("obs-6", "Observation")]),
        (
            {**OBS, "valueQuantity": {"value": 1, "code": "kg"}},
            [("qty-3", "Observation.value.ofType(Quantity)")],
        ),
        (
            {**OBS, "effectivePeriod": {"start": "2024-02-01", "end": "2024-01-01"}},
            [("per-1", "Observation.effective.ofType(Period)")],
        ),
        ({**OBS, "subject": {"reference": "#missing"}}, [("ref-1", "Observation.subject")]),
        ({**OBS, "note": [{}]}, [("ele-1", "Observation.note[0]")]),
        ({**OBS, "extension": [{"url": "http://x"}]}, [("ext-1", "Observation.extension[0]")]),
        (
            {**OBS, "referenceRange": [{"type": {"text": "normal"}}]},
            [("obs-3", "Observation.referenceRange[0]")],
        ),
        ({**OBS, "subject": {"reference": "Encounter/e"}}, [("MSG_REFERENCE_TYPE", "Observation.subject")]),
        (
            {**OBS, "subject": {"reference": "http://other.example/fhir/Encounter/e/_history/2"}},
            [("MSG_REFERENCE_TYPE", "Observation.subject")],
        ),
        (
            {**OBS, "subject": {"type": "Encounter", "identifier": {"value": "1"}}},
            [("MSG_REFERENCE_TYPE", "Observation.subject")],
        ),
        (
            {
                **OBS,
                "contained": [
                    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"}}
                ],
                "subject": {"reference": "#e1"},
            },
            [("MSG_REFERENCE_TYPE", "Observation.subject")],
        ),
    ],
    ids=[
        "obs-status",
        "gender",
        "goal-lifecycle",
        "quantity-comparator-in-choice",
        "humanname-use-in-backbone",
        "codeableconcept-required",
        "obs-6",
        "qty-3",
        "per-1",
        "ref-1",
        "ele-1",
        "ext-1",
        "obs-3",
        "subject-encounter",
        "absolute-url-history",
        "reference-type-element",
        "contained-target",
    ],
)
def test_refused_with_path(resource: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert errors(resource["resourceType"], resource) == expected


@pytest.mark.parametrize(
    "resource",
    [
        {**OBS, "effectivePeriod": {"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T10:00:00.002Z"}},
        {**OBS, "effectivePeriod": {"start": "2024-01-15", "end": "2024-01"}},
        {**OBS, "subject": {"reference": "urn:uuid:2d3f1c1e-6d1b-4a3e-9b7a-3a2b1c0d9e8f"}},
        {
            **OBS,
            "subject": {"reference": "Patient/p"},
            "valueQuantity": {"value": 1, "code": "kg", "system": "http://unitsofmeasure.org"},
        },
        {**OBS, "subject": {"identifier": {"value": "MRN1"}}},
        {
            **OBS,
            "contained": [{"resourceType": "Patient", "id": "p1"}],
            "subject": {"reference": "#p1"},
        },
        {"resourceType": "Patient", "_gender": {"extension": [{"url": "http://x", "valueString": "y"}]}},
        {"resourceType": "Patient", "language": "not-a-language-we-can-expand"},
    ],
    ids=[
        "ms-precision",
        "partial-date",
        "urn",
        "ucum",
        "logical",
        "contained",
        "primitive-ext",
        "unexpanded",
    ],
)
def test_accepted(resource: dict[str, Any]) -> None:
    assert check(resource["resourceType"], resource) == []


def test_warnings_only_when_asked() -> None:
    # Observation.category has a preferred binding, Patient.maritalStatus an extensible one, and
    # dom-6 (narrative) is a best-practice warning: none of them is an error.
    obs = {**OBS, "category": [{"coding": [{"system": "http://example.org", "code": "zzz"}]}]}
    assert check("Observation", obs) == []
    found = check("Observation", obs, warnings=True)
    assert {i["severity"] for i in found} == {"warning"}
    paths = {i["expression"][0] for i in found}
    assert paths == {"Observation", "Observation.category[0]"}
