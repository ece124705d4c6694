"""POST /rehab/adherence: what the patient did of the home program, per exercise and day -> Observations.

Which resource, and why: an Observation per exercise per day, as the HL7 Physical Activity IG
(hl7.org/fhir/us/physical-activity 1.0.0) reports performed exercise: Observations of category
`activity` whose code LOINC 73985-4 "Exercise activity" takes the kind of exercise as its
valueCodeableConcept (shared/reference/pt-measures.md row 27b, VERIFIED; §8.4 point 10). An
Observation is what a patient app may write about itself under a patient/Observation.c grant
(Patient compartment), it points to the plan it follows with `basedOn` (Observation.basedOn
allows CarePlan, https://hl7.org/fhir/R4B/observation-definitions.html#Observation.basedOn) and
the patient is its `performer`. A Procedure would need a code per exercise and a
Procedure.status per "partly", which FHIR does not have.
What the IG does not model (done / partly / not done, sets and repetitions done) goes in
components coded in our CodeSystem `home-program` (no standard code found); pain during the
exercise is a component coded LOINC 72514-3 "Pain severity - 0-10 verbal numeric rating"
(as pain_nrs in the catalog, VERIFIED there).

Adherence: done counts 1, partly 1/2, not done 0, over the days the exercise's frequency expects
in a week (1 per day: 7; every 2 days: 3.5; 3 per week: 3; no frequency: the days recorded),
by plan week (week 1 starts on the plan's start date), capped at 100 %.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from fhir_mapping import codes
from fhir_mapping.plans import read_exercise
from fhir_mapping.schemas import IdOf
from fhir_mapping.schemas import PatientId
from fhir_mapping.schemas import date_only
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role

EXERCISE_ACTIVITY = codes.coding(codes.LOINC, "73985-4", "Exercise activity")
PAIN = codes.coding(codes.LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported")
HOME_PROGRAM = f"{codes.BASE}/CodeSystem/home-program"
STATUSES = {"done": 1.0, "partly": 0.5, "not-done": 0.0}
_COMPONENTS = {"status": "adherence", "sets": "sets-done", "reps": "repetitions-done"}
# The home-program CodeSystem (seeded by fhir_mapping/terminology.py): exactly the codes written here,
# the components' codes and the adherence component's values. code -> (display, definition)
HOME_PROGRAM_CONCEPTS = {
    "adherence": (
        "Adherence",
        "How much of a home program exercise the patient did on the day (value: done | partly | not-done)",
    ),
    "sets-done": ("Sets done", "Number of sets of the exercise done on the day (valueInteger)"),
    "repetitions-done": ("Repetitions done", "Repetitions done in each set on the day (valueInteger)"),
    "done": ("Done", "Done as prescribed (counts 1 in adherence)"),
    "partly": ("Partly done", "Done in part (counts 1/2 in adherence)"),
    "not-done": ("Not done", "Not done (counts 0 in adherence)"),
}


class DoneSchema(Schema):
    """One exercise of the plan on one day."""

    exercise = fields.String(required=True, validate=validate.Length(min=1, max=200))
    status = fields.String(required=True, validate=validate.OneOf(list(STATUSES)))
    sets = fields.Integer(validate=validate.Range(min=0, max=50))
    reps = fields.Integer(validate=validate.Range(min=0, max=1000))
    pain = fields.Integer(validate=validate.Range(min=0, max=10))


class AdherenceSchema(Schema):
    """POST /rehab/adherence."""

    patient = PatientId(required=True)
    plan = IdOf("CarePlan")
    date = date_only(required=True, future=False)
    exercises = fields.List(
        fields.Nested(DoneSchema), required=True, validate=validate.Length(min=1, max=100)
    )


def plan_exercises(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The clinic exercises of a CarePlan's activities."""
    return [read_exercise(a) for a in plan.get("activity") or []]


def not_in_plan(payload: dict[str, Any], plan: dict[str, Any]) -> list[int]:
    """Indexes of the payload's exercises the plan does not hold."""
    names = {e["exercise"] for e in plan_exercises(plan)}
    return [i for i, done in enumerate(payload["exercises"]) if done["exercise"] not in names]


def _component(code: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [code]}, **value}


def build_adherence(payload: dict[str, Any], plan_ref: str, performer: str | None) -> list[Entry]:
    """Return one activity Observation per exercise of the day."""
    out = []
    for done in payload["exercises"]:
        components = [
            _component(
                codes.coding(HOME_PROGRAM, "adherence"),
                valueCodeableConcept={"coding": [codes.coding(HOME_PROGRAM, done["status"])]},
            )
        ]
        for key in ("sets", "reps"):
            if key in done:
                components.append(
                    _component(codes.coding(HOME_PROGRAM, _COMPONENTS[key]), valueInteger=done[key])
                )
        if "pain" in done:
            components.append(_component(PAIN, valueInteger=done["pain"]))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [codes.category("activity")],
            "code": {"coding": [EXERCISE_ACTIVITY]},
            "subject": {"reference": f"Patient/{payload['patient']}"},
            "basedOn": [{"reference": plan_ref}],
            "effectiveDateTime": payload["date"],
            "valueCodeableConcept": {"text": done["exercise"]},
            "component": components,
        }
        if performer:
            obs["performer"] = [{"reference": performer}]
        out.append(entry("adherence", obs))
    return out


def _codings(element: dict[str, Any]) -> list[dict[str, Any]]:
    return (element.get("code") or {}).get("coding") or []


def _day(value: Any) -> date | None:
    """The day a FHIR date or dateTime names, or None (a year or month only, or not a date)."""
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) and len(value) >= 10 else None
    except ValueError:
        return None


def _status(obs: dict[str, Any]) -> Any:
    """The code of the adherence component's value (done / partly / not-done), or None."""
    for comp in obs.get("component") or []:
        if codes.coding(HOME_PROGRAM, "adherence") in _codings(comp):
            return ((comp.get("valueCodeableConcept") or {}).get("coding") or [{}])[0].get("code")
    return None


def is_adherence(obs: dict[str, Any]) -> bool:
    """Whether an Observation is one of ours: an exercise activity of a day, named, with an adherence
    component (any client may write Observations: one off this shape is left out, not read)."""
    return (
        EXERCISE_ACTIVITY["code"] in {c.get("code") for c in _codings(obs)}
        and _day(obs.get("effectiveDateTime")) is not None
        and isinstance((obs.get("valueCodeableConcept") or {}).get("text"), str)
        and _status(obs) in STATUSES
    )


def read_done(obs: dict[str, Any]) -> dict[str, Any]:
    """Return the clinic record of one adherence Observation (inverse of build_adherence's items)."""
    out: dict[str, Any] = {"exercise": obs["valueCodeableConcept"]["text"], "status": _status(obs)}
    for comp in obs.get("component") or []:
        coding = (_codings(comp) or [{}])[0]
        if coding.get("code") in ("sets-done", "repetitions-done") and "valueInteger" in comp:
            out["sets" if coding["code"] == "sets-done" else "reps"] = comp["valueInteger"]
        elif coding.get("code") == PAIN["code"] and "valueInteger" in comp:
            out["pain"] = comp["valueInteger"]
    return out


def read_adherence(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of a day's adherence Observations."""
    found = of_role(entries, "adherence")
    return {
        "patient": found[0]["subject"]["reference"].removeprefix("Patient/"),
        "plan": found[0]["basedOn"][0]["reference"].removeprefix("CarePlan/"),
        "date": found[0]["effectiveDateTime"],
        "exercises": [read_done(o) for o in found],
    }


def expected_per_week(exercise: dict[str, Any]) -> float | None:
    """Days a week the exercise's frequency expects it (None: no frequency given, or a period of 0,
    which a CarePlan written through FHIR may hold)."""
    f = exercise.get("frequency")
    if not f or f["period"] <= 0:
        return None
    if f["period_unit"] == "d":
        return round(7 / f["period"], 2)
    return float(min(7, f["times"] / f["period"]))


def report(plan_ref: str, plan: dict[str, Any], observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Return adherence % per exercise of the plan, overall and per plan week."""
    start = _day((plan.get("period") or {}).get("start"))
    days: dict[str, dict[str, float]] = {}  # exercise -> day -> credit (the latest record of a day wins)
    for obs in sorted(observations, key=lambda o: o.get("meta", {}).get("lastUpdated", "")):
        if (obs.get("basedOn") or [{}])[0].get("reference") != plan_ref or not is_adherence(obs):
            continue
        done = read_done(obs)
        days.setdefault(done["exercise"], {})[obs["effectiveDateTime"][:10]] = STATUSES[done["status"]]
    out = []
    for exercise in plan_exercises(plan):
        credits = days.get(exercise["exercise"], {})
        per_week = expected_per_week(exercise)
        weeks: dict[int, dict[str, float]] = {}
        for day, credit in credits.items():
            n = (date.fromisoformat(day) - start).days // 7 + 1 if start else 1
            weeks.setdefault(n, {})[day] = credit
        rows = [_week(n, weeks[n], per_week, start) for n in sorted(weeks)]
        expected = sum(r["expected"] for r in rows)
        credited = sum(r["credited"] for r in rows)
        out.append(
            {
                "exercise": exercise["exercise"],
                "expected_per_week": per_week,
                "days_recorded": len(credits),
                "percent": _percent(credited, expected),
                "weeks": rows,
            }
        )
    about = {k: v for k, v in (("status", plan.get("status")), ("start", start and start.isoformat())) if v}
    return {"plan": plan_ref, **about, "exercises": out}


def _week(n: int, credits: dict[str, float], per_week: float | None, start: date | None) -> dict[str, Any]:
    expected = per_week if per_week is not None else float(len(credits))
    credited = sum(credits.values())
    row: dict[str, Any] = {
        "week": n,
        "credited": credited,
        "expected": expected,
        "percent": _percent(credited, expected),
    }
    first = start.toordinal() + 7 * (n - 1) if start is not None else 0
    if 1 <= first <= date.max.toordinal():  # a day recorded long before the plan: a week with no date
        row["start"] = date.fromordinal(first).isoformat()
    return row


def _percent(credited: float, expected: float) -> float | None:
    return None if expected <= 0 else codes.number(round(min(100.0, credited / expected * 100), 1))
