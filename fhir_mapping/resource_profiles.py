"""Profiles of the resources /rehab writes: one StructureDefinition per kind, claimed in meta.profile.

https://hl7.org/fhir/R4B/profiling.html and https://hl7.org/fhir/R4B/structuredefinition.html

Each profile constrains a base R4B resource (derivation = constraint) to what the builders in
this package write: cardinalities, fixed and pattern codes (only codes the builders already send,
each verified in shared/reference/pt-measures.md: SNOMED CT 91251008 and 229065009, US Core
careplan-category assess-plan, HL7 observation-category; our own CodeSystem otherwise), required
bindings to our ValueSets, and slices of code.coding, category and extension by value or pattern.
The snapshot is generated from the base definition in the official hl7.fhir.r4b.core 4.3.0
package (fhir_mapping/snapshot.py over fhir_mapping/data/r4b_base_elements.json). Their URLs
and which role of a /rehab transaction claims which are in fhir_mapping/profiles.py.
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping.assessments import PANEL
from fhir_mapping.assessments import PANEL_DISPLAY
from fhir_mapping.observations import BODY_POSITION_EXT
from fhir_mapping.plans import ASSESS_PLAN
from fhir_mapping.plans import EXERCISE_THERAPY
from fhir_mapping.profiles import EXERCISE_PLAN
from fhir_mapping.profiles import FINDING
from fhir_mapping.profiles import PANEL_PROFILE
from fhir_mapping.profiles import SCORE
from fhir_mapping.profiles import SENSOR_SERIES
from fhir_mapping.profiles import SESSION_PROCEDURE
from fhir_mapping.profiles import header
from fhir_mapping.sessions import PT_PROCEDURE
from fhir_mapping.snapshot import snapshot

CORE = "http://hl7.org/fhir/StructureDefinition"
OBSERVATION_CATEGORY_VS = "http://hl7.org/fhir/ValueSet/observation-category"

Element = dict[str, Any]


def _el(id_: str, **extra: Any) -> Element:
    path = ".".join(part.split(":", 1)[0] for part in id_.split("."))
    return {"id": id_, "path": path, **extra}


def _reference(*targets: str) -> list[dict[str, Any]]:
    return [{"code": "Reference", "targetProfile": [f"{CORE}/{t}" for t in targets]}]


def _extension_slices(base: str, slices: list[tuple[str, str, str]]) -> list[Element]:
    """`base`.extension sliced by url: (slice name, extension URL, max) each, closed to nothing."""
    out = [
        _el(
            f"{base}.extension",
            slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
        )
    ]
    for name, url, max_ in slices:
        out.append(
            _el(
                f"{base}.extension:{name}",
                sliceName=name,
                min=0,
                max=max_,
                type=[{"code": "Extension", "profile": [url]}],
            )
        )
    return out


def _rehab_code(base: str) -> list[Element]:
    """`base`.code carries exactly one coding from our CodeSystem (the slice `rehab`)."""
    return [
        _el(f"{base}.code.coding", min=1, slicing=_by_system()),
        _el(f"{base}.code.coding:rehab", sliceName="rehab", min=1, max="1"),
        _el(f"{base}.code.coding:rehab.system", min=1, fixedUri=codes.PT),
        _el(f"{base}.code.coding:rehab.code", min=1),
    ]


def _observation_common() -> list[Element]:
    return [
        _el(
            "Observation.category",
            min=1,
            binding={"strength": "required", "valueSet": OBSERVATION_CATEGORY_VS},
        ),
        *_rehab_code("Observation"),
        _el("Observation.subject", min=1, type=_reference("Patient")),
        _el("Observation.effective[x]", min=1),
    ]


def _finding() -> list[Element]:
    return [
        _el("Observation", short="A rehab finding: one coded measurement or grade"),
        *_extension_slices(
            "Observation",
            [
                ("assistiveDevice", codes.EXT_ASSISTIVE, "1"),
                ("testProtocol", codes.EXT_PROTOCOL, "1"),
                ("bodyPosition", BODY_POSITION_EXT, "1"),
                ("sessionTiming", codes.EXT_SESSION_TIMING, "1"),
            ],
        ),
        *_observation_common(),
        _el("Observation.encounter", type=_reference("Encounter")),
        _el("Observation.value[x]", min=1, type=[{"code": "Quantity"}, {"code": "CodeableConcept"}]),
        _el("Observation.bodySite.coding", slicing=_by_system()),
        _el("Observation.bodySite.coding:rehab", sliceName="rehab", min=0, max="1"),
        _el("Observation.bodySite.coding:rehab.system", min=1, fixedUri=codes.PT_BODY_SITE),
        _el(
            "Observation.bodySite.coding:rehab.code",
            min=1,
            binding={"strength": "required", "valueSet": f"{codes.BASE}/ValueSet/pt-body-sites"},
        ),
        _el("Observation.hasMember", max="0"),
        _el("Observation.component", max="0"),
    ]


def _category(base: str, name: str, pattern: dict[str, Any]) -> list[Element]:
    """`base`.category holds exactly one category matching `pattern` (slice `name`), maybe others."""
    return [
        _el(
            f"{base}.category",
            min=1,
            slicing={"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
        ),
        _el(f"{base}.category:{name}", sliceName=name, min=1, max="1", patternCodeableConcept=pattern),
    ]


def _by_system() -> dict[str, Any]:
    return {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}


def _panel() -> list[Element]:
    return [
        _el("Observation", short="A rehab assessment panel grouping the findings of one visit"),
        *_category("Observation", "exam", codes.category("exam")),
        _el(
            "Observation.code",
            patternCodeableConcept={"coding": [codes.coding(codes.PT, PANEL, PANEL_DISPLAY)]},
        ),
        _el("Observation.subject", min=1, type=_reference("Patient")),
        _el("Observation.encounter", min=1, type=_reference("Encounter")),
        _el("Observation.effective[x]", min=1, type=[{"code": "dateTime"}]),
        _el("Observation.value[x]", max="0"),
        _el("Observation.hasMember", min=1, type=_reference("Observation")),
    ]


def _score() -> list[Element]:
    return [
        _el("Observation", short="A scored outcome instrument, derived from its QuestionnaireResponse"),
        *_category("Observation", "survey", codes.category("survey")),
        _el(
            "Observation.code",
            binding={"strength": "required", "valueSet": codes.PT_VALUESET},
        ),
        *_rehab_code("Observation"),
        _el("Observation.subject", min=1, type=_reference("Patient")),
        _el("Observation.effective[x]", min=1, type=[{"code": "dateTime"}]),
        _el("Observation.value[x]", min=1, type=[{"code": "Quantity"}]),
        _el("Observation.derivedFrom", min=1, max="1", type=_reference("QuestionnaireResponse")),
    ]


def _series() -> list[Element]:
    return [
        _el("Observation", short="One channel of a wearable or biofeedback sensor recording"),
        *_observation_common(),
        _el("Observation.device", min=1, type=_reference("Device")),
        _el("Observation.value[x]", min=1, type=[{"code": "SampledData"}]),
        _el("Observation.hasMember", max="0"),
    ]


def _plan() -> list[Element]:
    detail = "CarePlan.activity.detail"
    return [
        _el("CarePlan", short="A rehab exercise plan: exercises with their dosing, linked to the goals"),
        _el("CarePlan.intent", fixedCode="plan"),
        *_category("CarePlan", "assessPlan", {"coding": [ASSESS_PLAN]}),
        _el("CarePlan.subject", type=_reference("Patient")),
        _el("CarePlan.period", min=1),
        _el("CarePlan.period.start", min=1),
        _el("CarePlan.goal", type=_reference("Goal")),
        _el("CarePlan.activity.detail", min=1),
        *_extension_slices(
            detail,
            [
                ("sets", codes.EXT_SETS, "1"),
                ("repetitions", codes.EXT_REPS, "1"),
                ("hold", codes.EXT_HOLD, "1"),
                ("load", codes.EXT_LOAD, "1"),
                ("progression", codes.EXT_PROGRESSION, "1"),
            ],
        ),
        _el(f"{detail}.code", min=1, patternCodeableConcept={"coding": [EXERCISE_THERAPY]}),
        _el(f"{detail}.goal", type=_reference("Goal")),
    ]


def _procedure() -> list[Element]:
    return [
        _el("Procedure", short="One intervention of a rehab treatment session"),
        *_extension_slices(
            "Procedure",
            [("modality", codes.EXT_MODALITY, "1"), ("parameter", codes.EXT_PARAMETER, "*")],
        ),
        _el("Procedure.status", fixedCode="completed"),
        _el("Procedure.category", min=1, patternCodeableConcept={"coding": [PT_PROCEDURE]}),
        _el("Procedure.code", min=1),
        _el("Procedure.code.coding", min=1),
        _el("Procedure.subject", type=_reference("Patient")),
        _el("Procedure.encounter", min=1, type=_reference("Encounter")),
        _el("Procedure.performed[x]", min=1, type=[{"code": "Period"}]),
    ]


# id, name, title, base type, differential builder
PROFILES = (
    (FINDING, "RehabFinding", "Rehab finding", "Observation", _finding),
    (PANEL_PROFILE, "RehabAssessmentPanel", "Rehab assessment panel", "Observation", _panel),
    (SCORE, "RehabScoredOutcome", "Rehab scored outcome", "Observation", _score),
    (EXERCISE_PLAN, "RehabExercisePlan", "Rehab exercise plan", "CarePlan", _plan),
    (SESSION_PROCEDURE, "RehabSessionProcedure", "Rehab session procedure", "Procedure", _procedure),
    (SENSOR_SERIES, "RehabSensorSeries", "Rehab sensor series", "Observation", _series),
)


def _profile(url: str, name: str, title: str, type_: str, build: Any) -> dict[str, Any]:
    differential = build()
    elements = snapshot(type_, differential)
    order = {e["id"]: i for i, e in enumerate(elements)}
    return {
        **header(url, name, differential[0]["short"], "resource", type_),
        "title": title,
        "snapshot": {"element": elements},
        "differential": {"element": sorted(differential, key=lambda e: order[e["id"]])},
    }


def resource_profiles() -> list[dict[str, Any]]:
    """Every resource profile of ours, with its generated snapshot."""
    return [_profile(*row) for row in PROFILES]
