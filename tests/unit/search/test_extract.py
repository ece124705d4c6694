"""Compiled FHIRPath extractors and the search definitions they run on."""

from __future__ import annotations

import pytest

from server.fhir.search import definitions
from server.fhir.search.extract import FALLBACKS
from server.fhir.search.extract import compile_expression
from server.fhir.search.extract import compile_path
from server.fhir.search.fhirpath import FhirPathSyntaxError
from server.fhir.search.fhirpath import parse
from server.fhir.search.fhirpath import unparse

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2020-01-02T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    "component": [
        {"code": {"text": "a"}, "valueCodeableConcept": {"text": "x"}},
        {"code": {"text": "b"}, "valueString": "y"},
    ],
}


def test_every_official_expression_compiles_without_fallback() -> None:
    count = 0
    for rtype in definitions.resource_types():
        for param in definitions.params_for(rtype).values():
            compile_expression(param.expression)
            for _, expr, _ in param.components:
                compile_path(expr)
            count += 1
    assert count > 2000
    assert len(FALLBACKS) <= 3, sorted(FALLBACKS)


def test_definitions_shape() -> None:
    assert len(definitions.resource_types()) == 141
    obs = definitions.params_for("Observation")
    assert obs["code"].type == "token"
    assert obs["code"].expression == "Observation.code"
    assert obs["code"].url == "http://hl7.org/fhir/SearchParameter/clinical-code"
    assert obs["_tag"].expression == "Resource.meta.tag"
    assert "Patient" in obs["subject"].targets
    assert obs["code-value-quantity"].components == (
        ("token", "code", "code"),
        ("quantity", "value.as(Quantity)", "value-quantity"),
    )
    assert definitions.params_for("NoSuchType") == {}
    assert definitions.compartment_params("Patient", "Observation") == ("subject", "performer")
    assert "Observation" in definitions.compartment_members("Patient")
    assert "Encounter" in definitions.compartment_members("Encounter")


def test_every_compartment_param_is_a_search_param() -> None:
    for kind in definitions.compartment_kinds():
        for rtype in definitions.compartment_members(kind):
            for name in definitions.compartment_params(kind, rtype):
                assert name in definitions.params_for(rtype), (kind, rtype, name)


def test_path_steps_and_choice_types() -> None:
    assert compile_expression("Observation.code")(OBSERVATION) == [("CodeableConcept", OBSERVATION["code"])]
    assert compile_expression("Observation.effective")(OBSERVATION) == [("dateTime", "2020-01-02T10:00:00Z")]
    assert compile_expression("(Observation.value as Quantity)")(OBSERVATION) == [
        ("Quantity", OBSERVATION["valueQuantity"])
    ]
    assert compile_expression("Observation.value.as(string)")(OBSERVATION) == []
    assert compile_expression("Observation.component.value.ofType(string)")(OBSERVATION) == [("string", "y")]
    assert compile_expression("Patient.code")(OBSERVATION) == []


def test_unions_backbones_and_relative_paths() -> None:
    combo = compile_expression("Observation.code | Observation.component.code")(OBSERVATION)
    assert [v for _, v in combo] == [OBSERVATION["code"], {"text": "a"}, {"text": "b"}]
    components = compile_path("Observation.component")([("Observation", OBSERVATION)], OBSERVATION)
    assert components[0][0] == "Observation.component"
    value = compile_path("value.as(CodeableConcept)")(components[:1], OBSERVATION)
    assert value == [("CodeableConcept", {"text": "x"})]
    assert compile_path("value.as(DateTime) | value.as(Period)")(components, OBSERVATION) == []


def test_where_resolve_is_type() -> None:
    group = {
        "resourceType": "AuditEvent",
        "agent": [
            {"who": {"reference": "Patient/1"}},
            {"who": {"reference": "http://other/fhir/Practitioner/2/_history/3"}},
            {"who": {"reference": "#c1"}},
        ],
        "contained": [{"resourceType": "Patient", "id": "c1"}],
    }
    patients = compile_expression("AuditEvent.agent.who.where(resolve() is Patient)")(group)
    assert [v["reference"] for _, v in patients] == ["Patient/1", "#c1"]
    practitioners = compile_expression("AuditEvent.agent.who.where(resolve() is Practitioner)")(group)
    assert len(practitioners) == 1


def test_where_equality_filter_and_first_and_index() -> None:
    org = {
        "resourceType": "OrganizationAffiliation",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
    }
    assert compile_expression("OrganizationAffiliation.telecom.where(system='email')")(org) == [
        ("ContactPoint", {"system": "email", "value": "a@b"})
    ]
    assert compile_expression("OrganizationAffiliation.telecom.first()")(org)[0][1]["value"] == "1"
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}]}
    composition = {"resourceType": "Composition", "id": "c"}
    assert compile_expression("Bundle.entry[0].resource")(bundle) == [("Composition", composition)]


def test_boolean_expression_and_exists() -> None:
    deceased = compile_expression("Patient.deceased.exists() and Patient.deceased != false")
    assert deceased({"resourceType": "Patient"}) == [("boolean", False)]
    assert deceased({"resourceType": "Patient", "deceasedBoolean": True}) == [("boolean", True)]
    assert deceased({"resourceType": "Patient", "deceasedBoolean": False}) == [("boolean", False)]
    assert deceased({"resourceType": "Patient", "deceasedDateTime": "2020"}) == [("boolean", True)]


def test_extension_values_are_unwrapped_with_their_type() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
    patient = {"resourceType": "Patient", "extension": [{"url": url, "valueString": "Smith"}]}
    assert compile_expression(f"Patient.extension('{url}')")(patient) == [("string", "Smith")]


def test_nested_where_with_extension_exists() -> None:
    expr = (
        "QuestionnaireResponse.item.where(extension('http://x/isSubject').exists())"
        ".answer.value.ofType(Reference)"
    )
    qr = {
        "resourceType": "QuestionnaireResponse",
        "item": [
            {
                "extension": [{"url": "http://x/isSubject", "valueBoolean": True}],
                "answer": [{"valueReference": {"reference": "Patient/1"}}],
            },
            {"answer": [{"valueReference": {"reference": "Patient/2"}}]},
        ],
    }
    assert compile_expression(expr)(qr) == [("Reference", {"reference": "Patient/1"})]


def test_common_params_and_unknown_types_guessed() -> None:
    res = {"resourceType": "Basic", "meta": {"tag": [{"code": "t"}], "profile": ["http://p"]}}
    assert compile_expression("Resource.meta.tag")(res) == [("Coding", {"code": "t"})]
    assert compile_expression("Resource.meta.profile")(res) == [("canonical", "http://p")]
    assert compile_expression("Basic.madeUp")({"resourceType": "Basic", "madeUp": {"coding": []}}) == [
        ("CodeableConcept", {"coding": []})
    ]


def test_parser_round_trips_and_rejects_garbage() -> None:
    expr = "ActivityDefinition.relatedArtifact.where(type = 'composed-of').resource"
    assert unparse(parse(expr)) == expr
    with pytest.raises(FhirPathSyntaxError):
        parse("Observation.code +")
