"""Code systems, fixed codings and extension URLs used by the rehab mapping.

Every standard code here is marked VERIFIED in shared/reference/pt-measures.md.
https://hl7.org/fhir/R4B/terminologies-systems.html
"""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
# HCPCS Level II (HL7 Terminology CodeSystem hcpcs-Level-II, publisher CMS)
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
US_CORE_CAREPLAN = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"

BASE = "https://rehabfhir.org/fhir"
# Our own CodeSystem: every measure, panel, grade, modality and parameter has a code here.
PT = f"{BASE}/CodeSystem/pt-measures"
PT_VALUESET = f"{BASE}/ValueSet/pt-measures"
PT_BODY_SITE = f"{BASE}/CodeSystem/pt-body-sites"
PT_CONCEPTMAP = f"{BASE}/ConceptMap/pt-measures-to-standard"
QUESTIONNAIRE = f"{BASE}/Questionnaire"
EXT = f"{BASE}/StructureDefinition"

# Laterality on a bodySite CodeableConcept, as mCODE does (SNOMED qualifier values 7771000 Left,
# 24028007 Right, 51440002 Right and left; all VERIFIED in the reference §1.2). We do not create
# a BodyStructure per Observation (§1.2 option b): one extension keeps the laterality on the
# Observation itself, readable without an include.
LATERALITY_EXT = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-laterality-qualifier"
LATERALITY = {
    "left": ("7771000", "Left (qualifier value)"),
    "right": ("24028007", "Right (qualifier value)"),
    "bilateral": ("51440002", "Right and left (qualifier value)"),
}
SIDE_OF_CODE = {code: side for side, (code, _) in LATERALITY.items()}

# Exercise dosing the FHIR CarePlan has no element for (the HL7 Physical Activity IG does not
# standardise sets, reps or load either, reference §8.4): one simple extension each on
# CarePlan.activity.detail.
EXT_SETS = f"{EXT}/exercise-sets"
EXT_REPS = f"{EXT}/exercise-repetitions"
EXT_HOLD = f"{EXT}/exercise-hold"
EXT_LOAD = f"{EXT}/exercise-load"
EXT_PROGRESSION = f"{EXT}/exercise-progression"
# The body site (and side) a Goal is about: Goal has no bodySite element (valueCodeableConcept).
EXT_GOAL_SITE = f"{EXT}/goal-body-site"
# A treatment parameter on a Procedure: complex extension with "parameter" (valueCoding from
# our CodeSystem) and "value" (valueQuantity in UCUM). Procedure has no parameter element.
EXT_PARAMETER = f"{EXT}/procedure-parameter"
# The modality a Procedure applied (valueCodeableConcept, our modality-* code), kept apart from
# Procedure.code so the billed CPT code and the modality are never two codings of one concept.
EXT_MODALITY = f"{EXT}/procedure-modality"
# Assistive device used during a test (e.g. TUG with a cane): valueString on the Observation.
EXT_ASSISTIVE = f"{EXT}/assistive-device"
# The exact protocol (e.g. PhenX one-leg stand) a timed test followed: valueCode on the Observation.
EXT_PROTOCOL = f"{EXT}/test-protocol"
# A value taken just before or after a treatment session (valueCode pre-treatment | post-treatment):
# the within-session change, kept apart from the longitudinal series.
EXT_SESSION_TIMING = f"{EXT}/session-timing"


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    """Return a Coding dict."""
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def category(code: str) -> dict[str, Any]:
    """Return an Observation.category CodeableConcept."""
    return {"coding": [coding(OBS_CATEGORY, code)]}


def quantity(value: float | int, unit: str) -> dict[str, Any]:
    """Return a UCUM Quantity dict."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def number(value: Any) -> float | int:
    """Return an int when the value is integral, else a float (stable JSON for round trips)."""
    f = float(value)
    return int(f) if f.is_integer() and abs(f) < 1e15 else f
