"""Our resource profiles: generated snapshots, what /rehab writes conforms, what breaks them is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_mapping import codes
from fhir_mapping import profiles as urls
from fhir_mapping import schemas
from fhir_mapping import terminology
from fhir_mapping.resource_profiles import resource_profiles
from fhir_mapping.snapshot import base_elements
from fhir_mapping.transaction import bundle
from server.errors import ValidationFailedError
from server.fhir.validation import check
from server.fhir.validation import enforce
from server.fhir.validation import profiles
from server.fhir.writes import prepare_write
from tests.unit.fhir_mapping.test_mapping_payloads import ENDPOINTS

PROFILES = {sd["url"]: sd for sd in resource_profiles()}


@pytest.fixture(autouse=True, scope="module")
def _held() -> None:
    profiles.hold(terminology.resources())


def _written(payload_id: str) -> list[dict[str, Any]]:
    _, schema, build, _, payload = next(e for e in ENDPOINTS if e[0] == payload_id)
    entries = build(schemas.load(schema, copy.deepcopy(payload)))
    return [e["resource"] for e in bundle(entries)["entry"]]


def _one(payload_id: str, profile: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(r for r in _written(payload_id) if profile in (r.get("meta") or {}).get("profile", ()))
    )


def _errors(resource: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(i["diagnostics"], i.get("expression", [])) for i in check(resource["resourceType"], resource)]


def test_one_profile_per_kind_of_resource_rehab_writes() -> None:
    assert set(PROFILES) == set(urls.ROLE_PROFILES.values())
    assert {sd["type"] for sd in PROFILES.values()} == {"Observation", "CarePlan", "Procedure"}
    for sd in PROFILES.values():
        assert sd["url"].startswith(f"{codes.BASE}/StructureDefinition/")
        assert sd["derivation"] == "constraint"
        assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"


@pytest.mark.parametrize("sd", list(PROFILES.values()), ids=list(PROFILES))
def test_profile_is_valid_r4b_with_a_snapshot_from_the_base(sd: dict[str, Any]) -> None:
    stored = prepare_write("StructureDefinition", sd).resource
    snapshot = stored["snapshot"]["element"]
    ids = [e["id"] for e in snapshot]
    # Every base element is there, in the base order, and every differential element landed.
    base_ids = [e["id"] for e in base_elements(sd["type"])]
    assert [i for i in ids if i in set(base_ids)] == base_ids
    diff = sd["differential"]["element"]
    assert [d["id"] for d in diff] == [i for i in ids if i in {d["id"] for d in diff}]
    by_id = {e["id"]: e for e in snapshot}
    for d in diff:
        for key, value in d.items():
            assert by_id[d["id"]][key] == value, (d["id"], key)
    assert all({"path", "min", "max", "definition"} <= set(e) for e in snapshot)


def test_snapshot_expands_data_types_and_slices() -> None:
    finding = {e["id"]: e for e in PROFILES[urls.FINDING]["snapshot"]["element"]}
    rehab = finding["Observation.code.coding:rehab.system"]
    assert (rehab["path"], rehab["fixedUri"], rehab["min"]) == ("Observation.code.coding.system", codes.PT, 1)
    assert rehab["base"]["path"] == "Coding.system"  # from the Coding data type's definition
    assert finding["Observation.code.coding:rehab"]["sliceName"] == "rehab"
    assert finding["Observation.subject"]["type"][0]["targetProfile"] == [
        "http://hl7.org/fhir/StructureDefinition/Patient"
    ]


@pytest.mark.parametrize("payload_id", [e[0] for e in ENDPOINTS])
def test_what_rehab_writes_claims_its_profile_and_conforms(payload_id: str) -> None:
    claimed = 0
    for resource in _written(payload_id):
        claims = (resource.get("meta") or {}).get("profile", [])
        claimed += bool(claims)
        assert all(profiles.profile(url) is not None for url in claims)
        assert _errors(resource) == [], resource
    assert claimed


def test_finding_without_our_coding_is_refused() -> None:
    obs = _one("assessment", urls.FINDING)
    obs["code"]["coding"] = [c for c in obs["code"]["coding"] if c["system"] != codes.PT]
    assert _errors(obs) == [
        (
            f"Observation.code.coding:rehab: minimum required = 1, but only found 0 (profile {urls.FINDING})",
            ["Observation.code.coding"],
        )
    ]
    with pytest.raises(ValidationFailedError) as caught:
        enforce("Observation", obs)
    assert caught.value.expression == ("Observation.code.coding",)


def test_panel_code_pattern_and_value_type_and_cardinality() -> None:
    panel = _one("assessment", urls.PANEL_PROFILE)
    panel["code"]["coding"][0]["code"] = "something-else"
    panel["valueString"] = "x"
    del panel["encounter"]
    found = {tuple(e) for _, e in _errors(panel)}
    assert found == {("Observation.code",), ("Observation.value.ofType(String)",), ("Observation.encounter",)}


def test_fixed_code_binding_and_reference_target() -> None:
    plan = _one("plan", urls.EXERCISE_PLAN)
    plan["intent"] = "order"
    plan["subject"] = {"reference": "Group/g1"}
    assert [e for _, e in _errors(plan)] == [["CarePlan.intent"], ["CarePlan.subject.reference"]]
    obs = _one("assessment", urls.FINDING)
    obs["category"] = [{"coding": [{"system": codes.OBS_CATEGORY, "code": "not-a-category"}]}]
    (text, where), *_ = _errors(obs)
    assert where == ["Observation.category[0]"] and "required value set" in text


def test_procedure_choice_type_and_extension_slice_max() -> None:
    proc = _one("session-modalities", urls.SESSION_PROCEDURE)
    period = proc.pop("performedPeriod")
    proc["performedDateTime"] = period["start"]
    modality = next(e for e in proc["extension"] if e["url"] == codes.EXT_MODALITY)
    proc["extension"].append(copy.deepcopy(modality))
    errors = _errors(proc)
    assert ["Procedure.performed.ofType(DateTime)"] in [e for _, e in errors]
    assert any("extension:modality: maximum allowed = 1" in t for t, _ in errors)


def test_score_needs_its_questionnaire_response() -> None:
    score = _one("outcome", urls.SCORE)
    score["derivedFrom"] = [{"reference": "Observation/x"}]
    (text, where), *_ = _errors(score)
    assert where == ["Observation.derivedFrom[0].reference"] and "QuestionnaireResponse" in text


def test_series_keeps_sampled_data_only() -> None:
    series = _one("sensor-series", urls.SENSOR_SERIES)
    series["valueQuantity"] = series.pop("valueSampledData")["origin"]
    assert [e for _, e in _errors(series)] == [["Observation.value.ofType(Quantity)"]]


def test_unknown_profile_is_a_warning_only_when_asked() -> None:
    obs = _one("assessment", urls.FINDING)
    obs["meta"]["profile"].append("http://example.org/StructureDefinition/unknown")
    assert check("Observation", obs) == []
    warnings = [i for i in check("Observation", obs, warnings=True) if i["code"] == "not-supported"]
    assert [w["severity"] for w in warnings] == ["warning"]


def test_extra_profile_and_wrong_type() -> None:
    plan = _one("plan", urls.EXERCISE_PLAN)
    del plan["meta"]
    assert check("CarePlan", plan) == []
    (issue,) = check("CarePlan", plan, profiles_=(urls.FINDING,))
    assert (
        issue["expression"] == ["CarePlan.meta.profile"] and "constrains Observation" in issue["diagnostics"]
    )


def test_closed_slicing_and_inherited_rules_of_a_derived_profile() -> None:
    url = "http://example.org/fhir/StructureDefinition/strict-plan"
    strict = {
        "resourceType": "StructureDefinition",
        "url": url,
        "type": "CarePlan",
        "kind": "resource",
        "derivation": "constraint",
        "baseDefinition": urls.EXERCISE_PLAN,
        "differential": {
            "element": [
                {
                    "id": "CarePlan.category",
                    "path": "CarePlan.category",
                    "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "closed"},
                }
            ]
        },
    }
    assert profiles.hold([strict]) == [url]
    try:
        plan = _one("plan", urls.EXERCISE_PLAN)
        plan["meta"]["profile"] = [url]
        assert check("CarePlan", plan) == []
        plan["category"].append({"text": "other"})
        plan["intent"] = "order"  # the base profile's fixed value still applies
        assert [e for _, e in _errors(plan)] == [["CarePlan.intent"], ["CarePlan.category[1]"]]
    finally:
        profiles.forget([url])
