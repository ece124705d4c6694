"""StructureDefinitions of the extensions the rehab mapping writes (served at /StructureDefinition),
and the URLs of our resource profiles with the /rehab roles that claim them (`claim`).

https://hl7.org/fhir/R4B/extensibility.html#Extension and
https://hl7.org/fhir/R4B/structuredefinition.html

Each extension's canonical URL is its StructureDefinition.url; the context and value type are
those the builders in this package write. Three kinds, each resolvable:
- ours (under codes.EXT): defined here;
- core extensions (CORE_EXTENSIONS): their official StructureDefinitions from hl7.fhir.r4b.core
  4.3.0, kept whole in fhir_mapping/data/r4b_core_extensions.json (scripts/extract_core_extensions.py);
- extensions of an implementation guide outside the core package (ELSEWHERE): they resolve in
  that IG, at the canonical named (README, "Profiles"); this server serves no copy.
tests/unit/fhir_mapping/test_mapping_profiles.py walks every extension the builders put on a
resource and checks its URL, value type and context against these definitions.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from fhir_mapping import codes

VERSION = "1.0.0"
# Our resource profiles (fhir_mapping/resource_profiles.py builds them) and the roles claiming them.
FINDING = f"{codes.EXT}/rehab-finding"
PANEL_PROFILE = f"{codes.EXT}/rehab-assessment-panel"
SCORE = f"{codes.EXT}/rehab-scored-outcome"
EXERCISE_PLAN = f"{codes.EXT}/rehab-exercise-plan"
SESSION_PROCEDURE = f"{codes.EXT}/rehab-session-procedure"
SENSOR_SERIES = f"{codes.EXT}/rehab-sensor-series"
ROLE_PROFILES = {  # role in a /rehab transaction -> the profile its resource claims
    "finding": FINDING,
    "pain_before": FINDING,
    "pain_after": FINDING,
    "summary": FINDING,
    "panel": PANEL_PROFILE,
    "score": SCORE,
    "careplan": EXERCISE_PLAN,
    "procedure": SESSION_PROCEDURE,
    "series": SENSOR_SERIES,
}

# url, name, context element, value type, short definition
SIMPLE = (
    (codes.EXT_SETS, "ExerciseSets", "CarePlan.activity.detail", "integer", "Number of sets prescribed"),
    (codes.EXT_REPS, "ExerciseRepetitions", "CarePlan.activity.detail", "integer", "Repetitions per set"),
    (
        codes.EXT_HOLD,
        "ExerciseHold",
        "CarePlan.activity.detail",
        "Quantity",
        "How long each repetition is held",
    ),
    (codes.EXT_LOAD, "ExerciseLoad", "CarePlan.activity.detail", "Quantity", "External load (weight, band)"),
    (codes.EXT_PROGRESSION, "ExerciseProgression", "CarePlan.activity.detail", "string", "How to progress"),
    (codes.EXT_MODALITY, "ProcedureModality", "Procedure", "CodeableConcept", "The modality applied"),
    (codes.EXT_ASSISTIVE, "AssistiveDevice", "Observation", "string", "Assistive device used in the test"),
    (codes.EXT_PROTOCOL, "TestProtocol", "Observation", "code", "Protocol the timed test followed"),
    (
        codes.EXT_GOAL_SITE,
        "GoalBodySite",
        "Goal",
        "CodeableConcept",
        "Body site (and side) the goal is about",
    ),
    (
        codes.EXT_SESSION_TIMING,
        "SessionTiming",
        "Observation",
        "code",
        "Taken just before (pre-treatment) or after (post-treatment) a session",
    ),
)
# Core extensions we write (episodes.EXT_EPISODE, observations.BODY_POSITION_EXT and
# questionnaires.ORDINAL, MIN_VALUE, MAX_VALUE): their official definitions, as the package holds them.
_CORE = "http://hl7.org/fhir/StructureDefinition"
CORE_EXTENSIONS = (
    f"{_CORE}/workflow-episodeOfCare",
    f"{_CORE}/observation-bodyPosition",
    f"{_CORE}/ordinalValue",
    f"{_CORE}/minValue",
    f"{_CORE}/maxValue",
)
# Extensions of implementation guides not in the core package -> where their canonical resolves.
ELSEWHERE = {
    codes.LATERALITY_EXT: "mCODE, package hl7.fhir.us.mcode (STU3 3.0.0 and later)",
}
# Complex: procedure-parameter = parameter (Coding from our CodeSystem) + value (Quantity, UCUM).
PARAMETER_PARTS = (("parameter", "Coding", "Which treatment parameter"), ("value", "Quantity", "Its value"))


def _element(id_: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "path": id_, **extra}


def header(url: str, name: str, description: str, kind: str, type_: str) -> dict[str, Any]:
    """The StructureDefinition of a profile of ours on `type_`, up to its elements."""
    return {
        "resourceType": "StructureDefinition",
        "id": url.rsplit("/", 1)[1],
        "url": url,
        "version": VERSION,
        "name": name,
        "status": "active",
        "description": description,
        "fhirVersion": "4.3.0",
        "kind": kind,
        "abstract": False,
        "type": type_,
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "derivation": "constraint",
    }


def _sd(url: str, name: str, context: str, short: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **header(url, name, short, "complex-type", "Extension"),
        "context": [{"type": "element", "expression": context}],
        "differential": {"element": [_element("Extension", short=short, max="1"), *elements]},
    }


def _simple(url: str, name: str, context: str, value_type: str, short: str) -> dict[str, Any]:
    return _sd(
        url,
        name,
        context,
        short,
        [
            _element("Extension.extension", max="0"),
            _element("Extension.url", fixedUri=url),
            _element("Extension.value[x]", min=1, type=[{"code": value_type}]),
        ],
    )


def _parameter() -> dict[str, Any]:
    elements = [_element("Extension.extension", min=2)]
    for part, value_type, short in PARAMETER_PARTS:
        slice_id = f"Extension.extension:{part}"
        elements += [
            _element(slice_id, path="Extension.extension", sliceName=part, min=1, max="1", short=short),
            _element(f"{slice_id}.url", path="Extension.extension.url", fixedUri=part),
            _element(
                f"{slice_id}.value[x]", path="Extension.extension.value[x]", type=[{"code": value_type}]
            ),
        ]
    elements += [
        _element("Extension.url", fixedUri=codes.EXT_PARAMETER),
        _element("Extension.value[x]", max="0"),
    ]
    return _sd(codes.EXT_PARAMETER, "ProcedureParameter", "Procedure", "A treatment parameter", elements)


def own_extension_definitions() -> list[dict[str, Any]]:
    """The StructureDefinitions of our own extensions (under codes.EXT)."""
    return [*(_simple(*row) for row in SIMPLE), _parameter()]


@lru_cache(maxsize=1)
def _core_text() -> str:
    return resources.files("fhir_mapping").joinpath("data", "r4b_core_extensions.json").read_text("utf-8")


def core_extension_definitions() -> list[dict[str, Any]]:
    """The official StructureDefinitions (hl7.fhir.r4b.core 4.3.0) of the core extensions we write."""
    return json.loads(_core_text())  # type: ignore[no-any-return]


def extension_definitions() -> list[dict[str, Any]]:
    """Every extension StructureDefinition the server seeds and serves: ours, then the core ones."""
    return [*own_extension_definitions(), *core_extension_definitions()]


def value_type(url: str) -> str | None:
    """The value[x] type our definition gives an extension URL (None: unknown or complex)."""
    return next((row[3] for row in SIMPLE if row[0] == url), None)


def claim(role: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource, claiming in meta.profile the profile of its /rehab role (if that role has one)."""
    url = ROLE_PROFILES.get(role)
    if url is None:
        return resource
    meta = dict(resource.get("meta") or {})
    meta["profile"] = [url, *(p for p in meta.get("profile") or () if p != url)]
    return {**resource, "meta": meta}
