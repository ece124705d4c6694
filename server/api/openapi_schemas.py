"""JSON Schemas of the /rehab API for its OpenAPI document: the catalog's rules and the answers.

Request bodies come from the fhir_mapping marshmallow schemas (through apispec's plugin, see
openapi.py); this module adds what those schemas check in code rather than in fields: the
measure and instrument enumerations with their units, ranges, sides and items (as
`enum` + `x-enum-descriptions` and as per-measure `if`/`then` rules), and the shapes of the
answers (clinic views, progress, catalog, OperationOutcome). The rules never refuse what the
server accepts; the server stays the judge of the rest (e.g. a range in a converted unit).
https://spec.openapis.org/oas/v3.1.0#schema-object ; https://json-schema.org/draft/2020-12
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import catalog
from fhir_mapping.catalog import Measure
from fhir_mapping.outcomes import INSTRUMENTS
from fhir_mapping.outcomes import Instrument
from fhir_mapping.sensors import STATS
from fhir_mapping.units import single_unit

REF = "#/components/schemas/"
NUMBER = {"type": "number"}
TEXT = {"type": "string"}
REFERENCE = {"type": "string", "pattern": r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$"}
PATIENT_ID = r"^(Patient/)?[A-Za-z0-9\-.]{1,64}$"
ID = r"^[A-Za-z0-9\-.]{1,64}$"
# A JSON number, or null where the analytics have nothing to say.
MAYBE_NUMBER = {"type": ["number", "null"]}
MAYBE_TEXT = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, str]:
    """Return a reference to a component schema."""
    return {"$ref": REF + name}


# -- the catalog as enumerations ----------------------------------------------------------------


def _range(m: Measure) -> str:
    if m.grades:
        return "grades " + " ".join(g.code for g in m.grades)
    return f"{m.low:g} to {m.high:g} {m.unit}"


def _measure_line(m: Measure) -> str:
    units = f"unit `{m.unit}` (also {', '.join(u for u in m.input_units if u != m.unit) or 'none'})"
    unit_part = "graded, no unit" if m.grades else units
    return f"{m.display}: {unit_part}; {_range(m)}; side {m.laterality}; body_site {m.site}" + (
        f"; protocols {', '.join(m.protocols)}" if m.protocols else ""
    )


def measure_schema() -> dict[str, Any]:
    """The measure keys, each described with its unit, accepted units, range, side and site rules."""
    rows = "\n".join(
        f"| `{m.key}` | {'graded' if m.grades else f'`{m.unit}`'} | "
        f"{', '.join(f'`{u}`' for u in m.input_units) or '—'} | {_range(m)} | {m.laterality} | {m.site} |"
        for m in catalog.MEASURES
    )
    return {
        "type": "string",
        "description": "A measure of the catalog (GET /rehab/catalog has every fact, codes included). "
        "A value is given in one of the accepted units and checked against the range in the "
        "measure's own unit after conversion.\n\n"
        "| measure | unit | accepted units | range | side | body_site |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + rows,
        "enum": [m.key for m in catalog.MEASURES],
        "x-enum-descriptions": [_measure_line(m) for m in catalog.MEASURES],
    }


def instrument_schema() -> dict[str, Any]:
    """The instrument keys, each described with its items, their range and the measure it scores."""
    lines = [_instrument_line(i) for i in INSTRUMENTS.values()]
    return {
        "type": "string",
        "description": 'A scored instrument; `items` answers items "1".."n" with whole numbers.\n\n'
        + "\n".join(f"- `{key}`: {line}" for key, line in zip(INSTRUMENTS, lines, strict=True)),
        "enum": list(INSTRUMENTS),
        "x-enum-descriptions": lines,
    }


def _instrument_line(i: Instrument) -> str:
    missing = f"at most {i.max_missing} unanswered" if i.max_missing else "every item needed"
    return f"{i.items} items scored {i.low}-{i.high} ({missing}); rule {i.rule}; scores `{i.measure}`"


def _value_rule(m: Measure, value_field: str) -> dict[str, Any]:
    if m.grades:
        return {"properties": {value_field: {"enum": [g.code for g in m.grades]}, "unit": False}}
    assert m.unit is not None and m.low is not None and m.high is not None
    in_range = {"type": "number", "minimum": m.low, "maximum": m.high}
    rule: dict[str, Any] = {
        "properties": {value_field: NUMBER, "unit": {"enum": list(m.input_units)}},
        # The range is in the measure's unit: checked here when the value is given in it.
        "if": {"properties": {"unit": {"const": m.unit}}, "required": ["unit"]},
        "then": {"properties": {value_field: in_range}},
    }
    if single_unit(m.unit):
        rule["else"] = {
            "if": {"not": {"required": ["unit"]}},
            "then": {"properties": {value_field: in_range}},
        }
    else:
        rule["required"] = ["unit"]
    return rule


def _presence(name: str, how: str) -> dict[str, Any]:
    if how == "required":
        return {"required": [name]}
    if how in ("forbidden", "none", "fixed"):
        return {"not": {"required": [name]}}
    return {}


def measure_rules(value_field: str) -> list[dict[str, Any]]:
    """One `if measure is K then ...` rule per measure: value kind, units, range, side, site, protocol."""
    rules = []
    for m in catalog.MEASURES:
        then: dict[str, Any] = {"allOf": [_value_rule(m, value_field)]}
        for part in (_presence("side", m.laterality), _presence("body_site", m.site)):
            if part:
                then["allOf"].append(part)
        protocol = {"enum": list(m.protocols)} if m.protocols else False
        then["allOf"].append({"properties": {"protocol": protocol}})
        rules.append(
            {"if": {"properties": {"measure": {"const": m.key}}, "required": ["measure"]}, "then": then}
        )
    return rules


def instrument_rules() -> list[dict[str, Any]]:
    """One `if instrument is K then ...` rule per instrument: item ids, value range, how many."""
    return [
        {
            "if": {"properties": {"instrument": {"const": key}}, "required": ["instrument"]},
            "then": {
                "properties": {
                    "items": {
                        "propertyNames": {"enum": i.link_ids()},
                        "additionalProperties": {"type": "integer", "minimum": i.low, "maximum": i.high},
                        "minProperties": i.items - i.max_missing,
                    }
                }
            },
        }
        for key, i in INSTRUMENTS.items()
    ]


# -- answers ------------------------------------------------------------------------------------


def _object(properties: dict[str, Any], required: tuple[str, ...] = (), **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **more}


def operation_outcome() -> dict[str, Any]:
    """Every error: a FHIR OperationOutcome whose `expression` names the field."""
    issue = _object(
        {
            "severity": {"enum": ["fatal", "error", "warning", "information"]},
            "code": {**TEXT, "description": "http://hl7.org/fhir/issue-type, e.g. invalid, login, forbidden"},
            "diagnostics": TEXT,
            "expression": {
                "type": "array",
                "items": TEXT,
                "description": "The fields, e.g. findings[0].unit",
            },
            "details": {"type": "object"},
        },
        ("severity", "code"),
    )
    return _object(
        {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "minItems": 1, "items": issue},
        },
        ("resourceType", "issue"),
        description="https://hl7.org/fhir/R4B/operationoutcome.html",
    )


def references() -> dict[str, Any]:
    """The `Type/id` of every resource written, by its role (finding, encounter, ...)."""
    return {
        "type": "object",
        "description": "Type/id of every resource the transaction wrote, by role",
        "additionalProperties": {"type": "array", "items": REFERENCE},
    }


def billing() -> dict[str, Any]:
    """Units per billed code by the CMS 8-minute rule."""
    line = _object(
        {"code": TEXT, "system": TEXT, "minutes": {"type": "integer"}, "timed": {"type": "boolean"}}
        | {"units": {"type": "integer"}},
        ("code", "units"),
    )
    return _object(
        {
            "rule": TEXT,
            "timed_minutes": {"type": "integer"},
            "timed_units": {"type": "integer"},
            "lines": {"type": "array", "items": line},
            "not_billed": {"type": "array", "items": TEXT},
        },
        ("rule", "lines", "not_billed"),
    )


def score() -> dict[str, Any]:
    """The instrument's score as an Observation value."""
    return _object({"measure": ref("Measure"), "value": NUMBER, "unit": TEXT}, ("measure", "value"))


def summary() -> dict[str, Any]:
    """One summary statistic of a sensor series."""
    return _object(
        {"stat": {"enum": list(STATS)}, "value": NUMBER, "unit": TEXT, "side": {"enum": ["left", "right"]}},
        ("stat", "value"),
    )


def point() -> dict[str, Any]:
    """One point of a series: as recorded, its instant, the value in the measure's unit."""
    return _object(
        {
            "date": {**TEXT, "description": "As recorded, with its zone"},
            "instant": {**TEXT, "format": "date-time"},
            "value": {"type": ["number", "string"]},
            "grade": TEXT,
            "observation": REFERENCE,
            "entered": _object({"value": NUMBER, "unit": TEXT}),
        },
        ("date", "instant", "value", "observation"),
    )


def _head() -> dict[str, Any]:
    defined_by = _object(
        {k: MAYBE_TEXT for k in ("method", "assistive_device", "position", "protocol")}
        | {"context": {"enum": ["longitudinal", "within-session"]}},
        ("context",),
    )
    return {
        "measure": ref("Measure"),
        "display": TEXT,
        "unit": MAYBE_TEXT,
        "side": {"enum": ["left", "right", None]},
        "body_site": MAYBE_TEXT,
        "defined_by": defined_by,
        "direction": {"enum": ["higher", "lower", None]},
    }


def progress() -> dict[str, Any]:
    """GET /rehab/patients/{id}/progress: series, within-session changes, excluded points."""
    value = {"type": ["number", "string", "null"]}
    series = _object(
        _head()
        | {
            "series": {"type": "array", "items": ref("ProgressPoint")},
            "scale": {"enum": ["numeric", "ordinal"]},
            "baseline": value,
            "latest": value,
            "change": MAYBE_NUMBER,
            "grade_steps": {"type": "integer"},
            "percent_change": MAYBE_NUMBER,
            "mcid": MAYBE_NUMBER,
            "mcid_kind": {"enum": ["absolute", "percent", None]},
            "mcid_reached": {"type": ["boolean", "null"]},
            "mdc": MAYBE_NUMBER,
            "last_step": {"type": ["object", "null"]},
            "trend": MAYBE_TEXT,
            "trend_detail": {"type": ["object", "null"]},
            "symmetry": {
                "type": ["object", "null"],
                "description": "Same-day left/right pairs (LSI, deficit)",
            },
        },
        ("measure", "unit", "side", "defined_by", "series", "scale", "baseline", "latest", "trend"),
    )
    session = _object(
        {
            "encounter": REFERENCE,
            "pre": {"oneOf": [ref("ProgressPoint"), {"type": "null"}]},
            "post": {"oneOf": [ref("ProgressPoint"), {"type": "null"}]},
            "change": MAYBE_NUMBER,
            "minutes_apart": NUMBER,
            "direction": MAYBE_TEXT,
        },
        ("encounter", "pre", "post", "change"),
    )
    within = _object(_head() | {"sessions": {"type": "array", "items": session}}, ("measure", "sessions"))
    excluded = _object(
        {
            "observation": REFERENCE,
            "measure": ref("Measure"),
            "date": MAYBE_TEXT,
            "value": value,
            "unit": MAYBE_TEXT,
            "status": MAYBE_TEXT,
            "reason": TEXT,
        },
        ("observation", "measure", "reason"),
    )
    return _object(
        {
            "patient": REFERENCE,
            "measures": {"type": "array", "items": series},
            "within_session": {"type": "array", "items": within},
            "excluded": {"type": "array", "items": excluded},
            "goals": {"type": "array", "items": _goal_view(value)},
            "adherence": {"type": "array", "items": _adherence()},
        },
        ("patient", "measures", "within_session", "excluded"),
    )


_ACHIEVEMENT = {
    "type": ["string", "null"],
    "description": "http://terminology.hl7.org/CodeSystem/goal-achievement code, kept current by each "
    "measurement (achieved, not-achieved after the due date, improving, worsening, no-change, in-progress)",
}


def _goal_view(value: dict[str, Any]) -> dict[str, Any]:
    current = _object({"value": value, "date": MAYBE_TEXT, "observation": TEXT}, ("value", "observation"))
    return _object(
        {
            "goal": REFERENCE,
            "description": MAYBE_TEXT,
            "lifecycle": MAYBE_TEXT,
            "achievement": _ACHIEVEMENT,
            "measure": TEXT,
            "side": TEXT,
            "target": value,
            "unit": TEXT,
            "due": TEXT,
            "current": {"anyOf": [current, {"type": "null"}]},
        },
        ("goal", "achievement", "current"),
    )


def _adherence() -> dict[str, Any]:
    percent = {
        "type": ["number", "null"],
        "description": "done 1, partly 1/2, not done 0, of the days expected",
    }
    week = _object(
        {
            "week": {"type": "integer"},
            "start": TEXT,
            "credited": NUMBER,
            "expected": NUMBER,
            "percent": percent,
        },
        ("week", "credited", "expected", "percent"),
    )
    exercise = _object(
        {
            "exercise": TEXT,
            "expected_per_week": MAYBE_NUMBER,
            "days_recorded": {"type": "integer"},
            "percent": percent,
            "weeks": {"type": "array", "items": week},
        },
        ("exercise", "percent", "weeks"),
    )
    return _object(
        {
            "plan": REFERENCE,
            "status": {**TEXT, "description": "the plan's status (active, completed at discharge…)"},
            "start": {**TEXT, "description": "the plan's start (its week 1)"},
            "exercises": {"type": "array", "items": exercise},
        },
        ("plan", "exercises"),
    )


def updated() -> dict[str, Any]:
    """Stored resources a write changed beside what it created (goals a measurement moved)."""
    item = _object(
        {"reference": REFERENCE, "summary": {**TEXT, "description": "the new status"}}, ("reference",)
    )
    return {"type": "array", "items": item}


def goal_patched() -> dict[str, Any]:
    """PATCH /rehab/goals/{id}: the goal's new version."""
    return _object(
        {
            "goal": REFERENCE,
            "version": {"type": "integer"},
            "lifecycle": TEXT,
            "achievement": _ACHIEVEMENT,
            "notes": {"type": "array", "items": TEXT},
        },
        ("goal", "version", "lifecycle", "achievement"),
    )


def catalog_entry() -> dict[str, Any]:
    """One measure as GET /rehab/catalog describes it."""
    code = _object(
        {
            "system": {**TEXT, "format": "uri"},
            "code": TEXT,
            "display": TEXT,
            "status": {"enum": ["verified", "verified-secondary", "partial"]},
            "sent": {"type": "boolean", "description": "Whether the code goes out as a coding"},
            "source": TEXT,
            "side": MAYBE_TEXT,
            "protocol": MAYBE_TEXT,
        },
        ("system", "code", "status", "sent"),
    )
    return _object(
        {
            "measure": ref("Measure"),
            "display": TEXT,
            "category": TEXT,
            "value_type": {"enum": ["Quantity", "CodeableConcept"]},
            "unit": {**MAYBE_TEXT, "description": "UCUM unit the value is stored in; null when graded"},
            "input_units": {"type": "array", "items": TEXT},
            "range": {"type": "array", "items": MAYBE_NUMBER, "minItems": 2, "maxItems": 2},
            "grades": {"type": "array", "items": TEXT},
            "laterality": {"enum": ["required", "optional", "forbidden"]},
            "body_site": {"enum": ["fixed", "required", "optional", "none"]},
            "method": TEXT,
            "mcid": MAYBE_NUMBER,
            "mcid_kind": {"enum": ["absolute", "percent", None]},
            "direction": {"enum": ["higher", "lower", None]},
            "status": {"enum": ["verified", "verified-secondary", "partial", "unverified"]},
            "codes": {"type": "array", "items": code},
            "source": TEXT,
            "note": TEXT,
        },
        ("measure", "display", "unit", "input_units", "range", "grades", "laterality", "body_site", "codes"),
    )


def catalog_answer() -> dict[str, Any]:
    """GET /rehab/catalog."""
    return _object({"measures": {"type": "array", "items": ref("CatalogEntry")}}, ("measures",))


_CERTIFICATION = {
    "start": TEXT,
    "end": TEXT,
    "visits_per_week": {"type": "integer"},
    "weeks": {"type": "integer"},
    "visits_authorized": {"type": "integer"},
}


def episode() -> dict[str, Any]:
    """GET /rehab/episodes/{id}: the episode and what links to it."""
    dated = {"date": MAYBE_TEXT}
    return _object(
        {
            "id": TEXT,
            "patient": TEXT,
            "status": {
                "enum": [
                    "planned",
                    "waitlist",
                    "active",
                    "onhold",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                ]
            },
            "start": MAYBE_TEXT,
            "end": TEXT,
            "condition": _object(
                {"system": {"enum": ["icd-10-cm", "snomed"]}, "code": TEXT, "display": TEXT},
                ("system", "code"),
            ),
            "referring": TEXT,
            "care_manager": TEXT,
            "assessments": {
                "type": "array",
                "items": _object({"encounter": REFERENCE, **dated}, ("encounter",)),
            },
            "sessions": {
                "type": "array",
                "items": _object(
                    {"encounter": REFERENCE, "warnings": {"type": "array", "items": TEXT}, **dated},
                    ("encounter",),
                ),
            },
            "plans": {
                "type": "array",
                "items": _object({"careplan": REFERENCE, "status": TEXT, **dated}, ("careplan",)),
            },
            "outcomes": {
                "type": "array",
                "items": _object(
                    {"questionnaire_response": REFERENCE, "instrument": TEXT, **dated},
                    ("questionnaire_response",),
                ),
            },
            "visits_used": {"type": "integer", "description": "Session Encounters linked to the episode"},
            "plan_of_care": _object(
                {
                    **_CERTIFICATION,
                    "careplan": REFERENCE,
                    "request": REFERENCE,
                    "version": {"type": "integer"},
                    "visits_used": {"type": "integer", "description": "Sessions in the current period"},
                    "visits_left": {"type": "integer"},
                    "certifications": {"type": "integer", "description": "Periods certified so far"},
                },
                ("careplan", "version", "start", "end", "visits_authorized", "visits_used"),
            ),
            "discharge": {
                "anyOf": [REFERENCE, {"type": "null"}],
                "description": "The discharge summary Composition (with a Composition search grant)",
            },
            "warnings": {
                "type": "array",
                "description": "Sessions beyond the visits authorized or outside the certified period",
                "items": _object({"encounter": REFERENCE, "warning": TEXT}, ("encounter", "warning")),
            },
        },
        ("id", "patient", "status", "assessments", "sessions", "plans", "outcomes", "visits_used"),
    )


def recertified() -> dict[str, Any]:
    """POST /rehab/episodes/{id}/recertification: the plan of care's new version."""
    return _object(
        {
            "episode": TEXT,
            "careplan": REFERENCE,
            "request": REFERENCE,
            "version": {"type": "integer"},
            "certification": _object(_CERTIFICATION, tuple(_CERTIFICATION)),
        },
        ("episode", "careplan", "request", "version", "certification"),
    )


def discharged() -> dict[str, Any]:
    """POST /rehab/episodes/{id}/discharge: the Composition written and the summary it holds."""
    row = _object(
        {
            "measure": TEXT,
            "display": TEXT,
            "side": MAYBE_TEXT,
            "unit": MAYBE_TEXT,
            "baseline": {"type": "object"},
            "discharge": {"type": "object"},
            "change": MAYBE_NUMBER,
            "mcid_reached": {"type": ["boolean", "null"]},
        },
        ("measure", "baseline", "discharge"),
    )
    visits = _object(
        {
            "used": {"type": "integer"},
            "authorized": {"type": ["integer", "null"]},
            "sessions": {"type": "array", "items": REFERENCE},
        },
        ("used", "authorized", "sessions"),
    )
    summary = _object(
        {
            "reason": TEXT,
            "note": TEXT,
            "condition": {"type": ["object", "null"]},
            "measures": {"type": "array", "items": row},
            "goals": {"type": "array", "items": {"type": "object", "required": ["goal", "met"]}},
            "visits": visits,
            "home_program": {"type": "array", "items": _adherence()},
        },
        ("reason", "measures", "goals", "visits", "home_program"),
    )
    return _object(
        {
            "episode": TEXT,
            "status": {"const": "finished"},
            "composition": REFERENCE,
            "document": {**TEXT, "description": "Composition/{id}/$document: the FHIR document Bundle"},
            "summary": summary,
        },
        ("episode", "status", "composition", "document", "summary"),
    )
