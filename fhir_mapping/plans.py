"""POST /rehab/plans: goals -> Goal with a coded target; exercise program -> CarePlan activities.

Exercise prescriptions, after the HL7 Physical Activity IG (hl7.org/fhir/us/physical-activity
1.0.0, reference §8.4): quantitative targets live in Goal (`target.measure` coded like the
Observation, `detailQuantity` in UCUM, `dueDate`); the order/plan links the goals; frequency is
a Timing; the exercise therapy code is SNOMED 229065009 as in the IG's ExerciseRx rule set.
The IG prescribes with a ServiceRequest and leaves sets, reps and load unmodelled; we write a
CarePlan (what the issue asks for: one plan, many activities) with `activity.detail` standard
elements (code, goal, scheduledTiming, description) and one small extension each for sets,
repetitions, hold, load and progression (codes.EXT_*), the only dosing FHIR has no element for.
Goal side/site go in the extension codes.EXT/goal-body-site (Goal has no bodySite).
https://hl7.org/fhir/R4B/careplan.html ; https://hl7.org/fhir/R4B/goal.html
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping import plan_of_care
from fhir_mapping.catalog import get
from fhir_mapping.catalog import recognise
from fhir_mapping.observations import body_site
from fhir_mapping.observations import code_concept
from fhir_mapping.observations import coded_qualifiers
from fhir_mapping.observations import ext
from fhir_mapping.observations import grade_code
from fhir_mapping.observations import read_value
from fhir_mapping.observations import side_of
from fhir_mapping.observations import site_of
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of

EXERCISE_THERAPY = codes.coding(codes.SNOMED, "229065009", "Exercise therapy (regime/therapy)")
ASSESS_PLAN = codes.coding(codes.US_CORE_CAREPLAN, "assess-plan", "Assessment and Plan of Treatment")
EXT_GOAL_SITE = codes.EXT_GOAL_SITE


def _auto_description(goal: dict[str, Any]) -> str:
    measure = get(goal["measure"])
    assert measure is not None
    side = f" ({goal['side']})" if goal.get("side") else ""
    unit = f" {goal['unit']}" if goal.get("unit") else ""
    return f"{measure.display}{side}: reach {goal['target']}{unit}"


def build_goal(goal: dict[str, Any], patient: str, start: str) -> dict[str, Any]:
    """Return the Goal for one clinic goal."""
    measure = get(goal["measure"])
    assert measure is not None
    target: dict[str, Any] = {"measure": code_concept(measure, goal.get("side"), goal.get("protocol"))}
    if measure.grades:
        target["detailCodeableConcept"] = {
            "coding": [codes.coding(codes.PT, grade_code(measure, goal["target"]))],
            "text": goal["target"],
        }
    else:
        target["detailQuantity"] = codes.quantity(goal["target"], goal["unit"])
    if goal.get("due"):
        target["dueDate"] = goal["due"]
    out: dict[str, Any] = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": goal.get("description") or _auto_description(goal)},
        "subject": {"reference": f"Patient/{patient}"},
        "startDate": start,
        "target": [target],
    }
    site = body_site(goal.get("body_site") or measure.fixed_site, goal.get("side"))
    if site is not None:
        out["extension"] = [{"url": EXT_GOAL_SITE, "valueCodeableConcept": site}]
    return out


def _activity(ex: dict[str, Any], goal_urls: list[str]) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "code": {"coding": [EXERCISE_THERAPY], "text": ex["exercise"]},
        "status": "scheduled",
    }
    extensions = []
    for key, url in (("sets", codes.EXT_SETS), ("reps", codes.EXT_REPS)):
        if key in ex:
            extensions.append({"url": url, "valueInteger": ex[key]})
    for key, url in (("hold", codes.EXT_HOLD), ("load", codes.EXT_LOAD)):
        if key in ex:
            extensions.append(
                {"url": url, "valueQuantity": codes.quantity(ex[key]["value"], ex[key]["unit"])}
            )
    if "progression" in ex:
        extensions.append({"url": codes.EXT_PROGRESSION, "valueString": ex["progression"]})
    if extensions:
        detail["extension"] = extensions
    if goal_urls:
        detail["goal"] = [{"reference": u} for u in goal_urls]
    if "frequency" in ex:
        f = ex["frequency"]
        detail["scheduledTiming"] = {
            "repeat": {"frequency": f["times"], "period": f["period"], "periodUnit": f["period_unit"]}
        }
    if "instructions" in ex:
        detail["description"] = ex["instructions"]
    return {"detail": detail}


def build_plan(payload: dict[str, Any]) -> list[Entry]:
    """Return one Goal per goal and the CarePlan holding the exercises and linking the goals."""
    patient, date = payload["patient"], payload["date"]
    goals = [entry("goal", build_goal(g, patient, date)) for g in payload.get("goals") or []]
    goal_urls = [g.full_url for g in goals]
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [ASSESS_PLAN]}],
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": date},
    }
    if payload.get("title"):
        plan["title"] = payload["title"]
    if goal_urls:
        plan["goal"] = [{"reference": u} for u in goal_urls]
    if payload.get("exercises"):
        plan["activity"] = [_activity(ex, goal_urls) for ex in payload["exercises"]]
    return [*goals, entry("careplan", plan)]


def read_goal(goal: dict[str, Any]) -> dict[str, Any] | None:
    """Return the clinic goal of a Goal (inverse of build_goal), or None for an uncoded goal."""
    target = (goal.get("target") or [{}])[0]
    codings = (target.get("measure") or {}).get("coding") or []
    found = recognise(codings)
    if found is None:
        return None
    measure = found[0]
    shaped = {
        "valueQuantity": target.get("detailQuantity"),
        "valueCodeableConcept": target.get("detailCodeableConcept"),
    }
    value, unit = read_value(measure, {k: v for k, v in shaped.items() if v is not None})
    if value is None:
        return None
    out: dict[str, Any] = {"measure": measure.key, "target": value}
    if unit:
        out["unit"] = unit
    site_concept = (ext(goal, EXT_GOAL_SITE) or {}).get("valueCodeableConcept")
    code_side, protocol = coded_qualifiers(measure, codings)
    side = side_of(site_concept) or code_side
    if side:
        out["side"] = side
    site = site_of(site_concept)
    if site and site != measure.fixed_site:
        out["body_site"] = site
    if protocol:
        out["protocol"] = protocol
    if target.get("dueDate"):
        out["due"] = target["dueDate"]
    text = (goal.get("description") or {}).get("text")
    if text and text != _auto_description(out):
        out["description"] = text
    return out


def read_exercise(activity: dict[str, Any]) -> dict[str, Any]:
    """Return the clinic exercise of a CarePlan activity (inverse of _activity)."""
    detail = activity.get("detail") or {}
    out: dict[str, Any] = {"exercise": (detail.get("code") or {}).get("text") or ""}
    for key, url in (("sets", codes.EXT_SETS), ("reps", codes.EXT_REPS)):
        found = ext(detail, url)
        if found:
            out[key] = found["valueInteger"]
    for key, url in (("hold", codes.EXT_HOLD), ("load", codes.EXT_LOAD)):
        found = ext(detail, url)
        if found:
            q = found["valueQuantity"]
            out[key] = {"value": codes.number(q["value"]), "unit": q["code"]}
    repeat = (detail.get("scheduledTiming") or {}).get("repeat")
    if repeat:
        out["frequency"] = {
            "times": repeat.get("frequency", 1),
            "period": codes.number(repeat.get("period", 1)),
            "period_unit": repeat.get("periodUnit", "d"),
        }
    found = ext(detail, codes.EXT_PROGRESSION)
    if found:
        out["progression"] = found["valueString"]
    if detail.get("description"):
        out["instructions"] = detail["description"]
    return out


def read_plan(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of a plan's resources (inverse of build_plan)."""
    plan = of_role(entries, "careplan")[0]
    # A plan of care keeps its certification in `period`, the date it was written in `created`.
    out: dict[str, Any] = {
        "patient": patient_of(plan),
        "date": plan.get("created") or plan["period"]["start"],
    }
    if plan.get("title"):
        out["title"] = plan["title"]
    goals = [g for g in (read_goal(r) for r in of_role(entries, "goal")) if g is not None]
    if goals:
        out["goals"] = goals
    if plan.get("activity"):
        out["exercises"] = [read_exercise(a) for a in plan["activity"]]
    for visits in of_role(entries, "visits"):
        out["certification"] = plan_of_care.read_certification(plan, visits)
    author = str((plan.get("author") or {}).get("reference") or "")
    if author.startswith("Practitioner/"):
        out["author"] = author.removeprefix("Practitioner/")
    return out
