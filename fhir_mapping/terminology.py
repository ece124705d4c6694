"""Our CodeSystems, ValueSets and ConceptMap (ours -> LOINC/SNOMED), built from the catalog.

The ConceptMap holds only codes the catalog sends (verified); equivalence says how close the
standard code is (grip left/right: narrower; ROM 364564000: wider; Berg 404933001 names the
test: relatedto). `lookup` and `translate` answer $lookup / $translate from the same data.
https://hl7.org/fhir/R4B/codesystem.html ; https://hl7.org/fhir/R4B/conceptmap.html
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import adherence
from fhir_mapping import codes
from fhir_mapping import profiles
from fhir_mapping.assessments import ENCOUNTER_TYPES
from fhir_mapping.assessments import PANEL
from fhir_mapping.assessments import PANEL_DISPLAY
from fhir_mapping.catalog import BODY_SITES
from fhir_mapping.catalog import MEASURES
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import StdCode
from fhir_mapping.observations import GRADE_PREFIX
from fhir_mapping.sensors import STATS
from fhir_mapping.sessions import MODALITIES
from fhir_mapping.sessions import PARAMETERS

VERSION = "1.0.0"
_EQUIVALENCE = {
    "grip_strength": "narrower",
    "single_leg_stance": "narrower",
    "promis_pf_tscore": "narrower",
    "pain_vas": "wider",
    "berg_balance_total": "relatedto",
}
_PROPERTIES = (
    ("category", "code", "Observation.category"),
    ("unit", "string", "UCUM unit of the value"),
    ("status", "code", "Verification status of the standard code(s)"),
    ("direction", "code", "Which way is better: higher | lower"),
    ("mcid", "decimal", "Minimal clinically important difference"),
    ("source", "string", "Source"),
)


def _measure_properties(m: Measure) -> list[dict[str, Any]]:
    props: list[dict[str, Any]] = [
        {"code": "category", "valueCode": m.category},
        {"code": "status", "valueCode": m.status},
    ]
    if m.unit:
        props.append({"code": "unit", "valueString": m.unit})
    if m.direction:
        props.append({"code": "direction", "valueCode": m.direction})
    if m.mcid is not None:
        props.append({"code": "mcid", "valueDecimal": m.mcid})
    props.append({"code": "source", "valueString": m.source})
    return props


def concepts() -> list[dict[str, Any]]:
    """Every concept of our pt-measures CodeSystem."""
    out = [
        {
            "code": m.key,
            "display": m.display,
            "definition": f"{m.display} ({m.method})".strip(),
            "property": _measure_properties(m),
        }
        for m in MEASURES
    ]
    for m in MEASURES:
        for g in m.grades:
            out.append({"code": f"{GRADE_PREFIX[m.key]}-{g.code}", "display": g.display})
    out.append({"code": PANEL, "display": PANEL_DISPLAY})
    out += [{"code": k, "display": v} for k, v in ENCOUNTER_TYPES.items()]
    out += [{"code": f"modality-{k}", "display": v[0]} for k, v in MODALITIES.items()]
    out += [{"code": f"param-{k}", "display": v} for k, v in PARAMETERS.items()]
    out += [{"code": f"stat-{k}", "display": v} for k, v in STATS.items()]
    return out


def code_systems() -> list[dict[str, Any]]:
    """Our CodeSystem resources: pt-measures, pt-body-sites and home-program (adherence components)."""
    measures = {
        "resourceType": "CodeSystem",
        "id": "pt-measures",
        "url": codes.PT,
        "version": VERSION,
        "name": "PtMeasures",
        "title": "Rehabilitation measures, grades, modalities and parameters",
        "status": "active",
        "experimental": False,
        "caseSensitive": True,
        "content": "complete",
        "valueSet": codes.PT_VALUESET,
        "property": [{"code": c, "type": t, "description": d} for c, t, d in _PROPERTIES],
        "concept": concepts(),
    }
    sites = {
        "resourceType": "CodeSystem",
        "id": "pt-body-sites",
        "url": codes.PT_BODY_SITE,
        "version": VERSION,
        "name": "PtBodySites",
        "title": "Joints and muscle groups for rehabilitation findings",
        "status": "active",
        "caseSensitive": True,
        "content": "complete",
        "concept": [{"code": k, "display": v[0]} for k, v in BODY_SITES.items()],
    }
    home_program = {
        "resourceType": "CodeSystem",
        "id": "home-program",
        "url": adherence.HOME_PROGRAM,
        "version": VERSION,
        "name": "HomeProgram",
        "title": "Home program adherence: what a patient did of an exercise on a day",
        "status": "active",
        "caseSensitive": True,
        "content": "complete",
        "concept": [
            {"code": code, "display": display, "definition": definition}
            for code, (display, definition) in adherence.HOME_PROGRAM_CONCEPTS.items()
        ],
    }
    return [measures, sites, home_program]


def value_sets() -> list[dict[str, Any]]:
    """ValueSets: the measures, the body sites, the modalities."""

    def vs(id_: str, title: str, system: str, wanted: list[tuple[str, str]] | None) -> dict[str, Any]:
        include: dict[str, Any] = {"system": system}
        if wanted is not None:
            include["concept"] = [{"code": c, "display": d} for c, d in wanted]
        return {
            "resourceType": "ValueSet",
            "id": id_,
            "url": f"{codes.BASE}/ValueSet/{id_}",
            "version": VERSION,
            "name": "".join(p.capitalize() for p in id_.split("-")),
            "title": title,
            "status": "active",
            "compose": {"include": [include]},
        }

    return [
        vs("pt-measures", "Rehabilitation measures", codes.PT, [(m.key, m.display) for m in MEASURES]),
        vs("pt-body-sites", "Rehabilitation body sites", codes.PT_BODY_SITE, None),
        vs(
            "pt-modalities",
            "Treatment modalities",
            codes.PT,
            [(f"modality-{k}", v[0]) for k, v in MODALITIES.items()],
        ),
    ]


def mappings() -> list[tuple[Measure, StdCode, str]]:
    """(measure, standard code, equivalence) for every code the catalog sends."""
    out = []
    for m in MEASURES:
        for c in m.codes:
            if c.sent:
                equivalence = "wider" if c.code == "364564000" else _EQUIVALENCE.get(m.key, "equivalent")
                out.append((m, c, equivalence))
    return out


def _comment(m: Measure, c: StdCode) -> str:
    parts = [f"status {c.status}: {c.source}"]
    if c.side:
        parts.append(f"only for side = {c.side}")
    if c.protocol:
        parts.append(f"only for protocol = {c.protocol}")
    return "; ".join(parts)


def concept_map() -> dict[str, Any]:
    """The ConceptMap from our measure codes to LOINC and SNOMED CT."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m, c, equivalence in mappings():
        elements = groups.setdefault(c.system, [])
        element = next((e for e in elements if e["code"] == m.key), None)
        if element is None:
            element = {"code": m.key, "display": m.display, "target": []}
            elements.append(element)
        element["target"].append(
            {"code": c.code, "display": c.display, "equivalence": equivalence, "comment": _comment(m, c)}
        )
    return {
        "resourceType": "ConceptMap",
        "id": "pt-measures-to-standard",
        "url": codes.PT_CONCEPTMAP,
        "version": VERSION,
        "name": "PtMeasuresToStandard",
        "title": "Rehabilitation measures to LOINC / SNOMED CT",
        "status": "active",
        "sourceCanonical": codes.PT_VALUESET,
        "group": [
            {"source": codes.PT, "target": system, "element": elements} for system, elements in groups.items()
        ],
    }


def resources() -> list[dict[str, Any]]:
    """Every terminology resource we serve, and the StructureDefinitions of our extensions and profiles."""
    from fhir_mapping.resource_profiles import resource_profiles

    return [
        *code_systems(),
        *value_sets(),
        concept_map(),
        *profiles.extension_definitions(),
        *resource_profiles(),
    ]


def lookup(system: str, code: str) -> dict[str, Any] | None:
    """Return {name, version, display, properties} for a code of ours or a standard code we send."""
    for cs in code_systems():
        if cs["url"] == system:
            for concept in cs["concept"]:
                if concept["code"] == code:
                    return {
                        "name": cs["name"],
                        "version": VERSION,
                        "display": concept["display"],
                        "property": concept.get("property", []),
                    }
            return None
    for _m, c, _ in mappings():
        if c.system == system and c.code == code:
            return {
                "name": "LOINC" if system == codes.LOINC else "SNOMED CT",
                "display": c.display,
                "property": [
                    {"code": "status", "valueCode": c.status},
                    {"code": "source", "valueString": c.source},
                ],
            }
    return None


def translate(system: str, code: str, target: str | None = None) -> list[dict[str, Any]]:
    """Return the matches (equivalence, concept coding, comment) of a code, ours -> standard or back."""
    out = []
    for m, c, equivalence in mappings():
        if system == codes.PT and code == m.key and target in (None, c.system):
            out.append(
                {
                    "equivalence": equivalence,
                    "concept": codes.coding(c.system, c.code, c.display),
                    "comment": _comment(m, c),
                }
            )
        elif system == c.system and code == c.code and target in (None, codes.PT):
            reverse = {"narrower": "wider", "wider": "narrower"}.get(equivalence, equivalence)
            out.append(
                {
                    "equivalence": reverse,
                    "concept": codes.coding(codes.PT, m.key, m.display),
                    "comment": _comment(m, c),
                }
            )
    return out
