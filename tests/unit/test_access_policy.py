"""The one access policy: `permits` on single resource versions, and the in-memory search matcher."""

from __future__ import annotations

from typing import Any

import pytest

from auth import scopes
from server.fhir.access import DENY
from server.fhir.access import SYSTEM
from server.fhir.access import AccessContext
from server.fhir.access import patients_of
from server.fhir.access import permits
from server.fhir.http import FhirRequest
from server.fhir.search.matching import matches
from server.fhir.search.params import parse_search

VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def _ctx(scope: str, patient: str | None = "A") -> AccessContext:
    policy = scopes.parse(scope)
    return AccessContext(patient=patient, rules=policy.rules, scopes=frozenset(policy.scopes))


def _obs(subject: str = "Patient/A", category: str = "vital-signs", **extra: Any) -> dict[str, Any]:
    system, _, code = VITALS.rpartition("|")
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{"system": system, "code": category}]}],
        "code": {"text": "x"},
        "subject": {"reference": subject},
        **extra,
    }


def test_default_context_denies_and_system_allows() -> None:
    assert not permits(DENY, "Observation", "r", _obs())
    assert permits(SYSTEM, "Observation", "d", _obs("Patient/B"))


def test_patients_of_counts_every_reference_to_a_patient() -> None:
    assert patients_of(_obs()) == {"A"}
    assert patients_of(_obs(performer=[{"reference": "Patient/B"}])) == {"A", "B"}
    device = {"resourceType": "Device", "id": "d", "patient": {"reference": "http://x.org/fhir/Patient/B"}}
    assert patients_of(device) == {"B"}
    task = {
        "resourceType": "Task",
        "id": "t",
        "status": "draft",
        "intent": "order",
        "for": {"reference": "Patient/B"},
    }
    assert patients_of(task) == {"B"}
    assert patients_of({"resourceType": "Patient", "id": "A"}) == {"A"}
    assert patients_of({"resourceType": "Organization", "id": "org"}) == set()


def test_patient_grant_sees_only_its_patient() -> None:
    ctx = _ctx("patient/*.rs")
    assert permits(ctx, "Observation", "r", _obs())
    assert not permits(ctx, "Observation", "r", _obs("Patient/B"))
    assert not permits(ctx, "Observation", "r", _obs(performer=[{"reference": "Patient/B"}]))
    assert not permits(ctx, "Observation", "r", {**_obs(), "subject": None})  # a member type needs A
    assert permits(ctx, "Organization", "r", {"resourceType": "Organization", "id": "org"})
    assert not permits(
        ctx, "Device", "r", {"resourceType": "Device", "id": "d", "patient": {"reference": "Patient/B"}}
    )
    assert not permits(_ctx("patient/*.rs", patient=None), "Observation", "r", _obs())


def test_patient_writes_must_belong_to_the_patient_and_reference_no_other() -> None:
    ctx = _ctx("patient/*.cruds")
    assert permits(ctx, "Observation", "c", _obs())
    assert not permits(ctx, "Observation", "c", _obs(performer=[{"reference": "Patient/B"}]))
    assert not permits(ctx, "Organization", "u", {"resourceType": "Organization", "id": "org"})
    assert not permits(ctx, "Practitioner", "d", {"resourceType": "Practitioner", "id": "p"})


def test_parameter_restrictions_are_judged_per_version() -> None:
    ctx = _ctx(f"patient/Patient.rs patient/Observation.rs?category={VITALS}")
    assert permits(ctx, "Observation", "r", _obs())
    assert not permits(ctx, "Observation", "r", _obs(category="laboratory"))
    assert not permits(
        ctx, "Condition", "r", {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/A"}}
    )
    either = _ctx(f"system/Observation.rs?category={VITALS} system/Observation.rs?status=final")
    assert permits(either, "Observation", "r", _obs(category="laboratory"))  # the second rule grants it
    assert not permits(either, "Observation", "r", {**_obs(category="laboratory"), "status": "amended"})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("category", VITALS),), True),
        ((("category", "vital-signs"),), True),
        ((("category", "laboratory"),), False),
        ((("category:not", "laboratory"),), True),
        ((("subject", "Patient/A"),), True),
        ((("subject", "Patient/B"),), False),
        ((("status", "final,amended"),), True),
        ((("date", "ge2020-01-01"),), True),
        ((("date", "lt2020-01-01"),), False),
        ((("value-quantity", "5"),), False),  # not decided in memory: fails closed
        ((("code:text", "x"),), True),
    ],
)
def test_in_memory_matcher_agrees_with_search_semantics(
    params: tuple[tuple[str, str], ...], expected: bool
) -> None:
    tests = parse_search(FhirRequest("GET", "", params=params), ("Observation",), strict=True).tests
    assert matches(tests, _obs(effectiveDateTime="2026-11-20T10:00:00Z")) is expected
