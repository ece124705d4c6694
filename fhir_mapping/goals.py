"""Goal achievement kept current from the measurements, and set by hand.

A Goal's `achievementStatus` (CodeSystem http://terminology.hl7.org/CodeSystem/goal-achievement,
hl7.fhir.r4b.core 4.3.0: in-progress > improving | worsening | no-change; achieved > sustaining;
not-achieved > no-progress | not-attainable) and `outcomeReference` (the Observation that shows
the outcome) follow each new measurement of the goal's measure and side
(https://hl7.org/fhir/R4B/goal-definitions.html#Goal.achievementStatus):
- achieved: the latest value meets the target (at or above it where higher is better, at or
  below where lower is, the grade reached on an ordinal scale);
- not-achieved: not met and measured after the due date;
- improving / worsening / no-change: not met; the last step, in the measure's better direction
  (a graded measure in grade steps);
- in-progress: one measurement only, not met.
Only measurements on or after the goal's start date decide; an earlier one is the step's base.
`lifecycleStatus` (goal-status: proposed ... active, on-hold, completed, cancelled ...) is the
therapist's to set (PATCH /rehab/goals/{id}), never changed here.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import analytics
from fhir_mapping import codes
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get
from fhir_mapping.plans import read_goal
from fhir_mapping.symmetry import rank

ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
ACHIEVEMENTS = {
    "in-progress": "In Progress",
    "improving": "Improving",
    "worsening": "Worsening",
    "no-change": "No Change",
    "achieved": "Achieved",
    "sustaining": "Sustaining",
    "not-achieved": "Not Achieved",
    "no-progress": "No Progress",
    "not-attainable": "Not Attainable",
}
LIFECYCLES = (
    "proposed",
    "planned",
    "accepted",
    "active",
    "on-hold",
    "completed",
    "cancelled",
    "entered-in-error",
    "rejected",
)
# Goals still sought: the ones a measurement can move.
SOUGHT = ("proposed", "planned", "accepted", "active", "on-hold")


class GoalPatchSchema(Schema):
    """PATCH /rehab/goals/{id}: the therapist's judgement."""

    achievement = fields.String(validate=validate.OneOf(list(ACHIEVEMENTS)))
    lifecycle = fields.String(validate=validate.OneOf(LIFECYCLES))
    note = fields.String(validate=validate.Length(min=1, max=2000))

    @validates_schema
    def _something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("Give achievement, lifecycle or note", field_name="achievement")


def sought(goal: dict[str, Any]) -> bool:
    """Whether a Goal is still sought (a measurement may move it)."""
    return goal.get("lifecycleStatus") in SOUGHT


def measure_codes(goals: list[dict[str, Any]]) -> list[str]:
    """The `system|code` tokens of the goals' target measures (to search their Observations)."""
    tokens = {
        f"{c['system']}|{c['code']}"
        for goal in goals
        for target in goal.get("target") or []
        for c in (target.get("measure") or {}).get("coding") or []
        if c.get("system") and c.get("code")
    }
    return sorted(tokens)


def achievement_of(goal: dict[str, Any]) -> str | None:
    """Return a Goal's achievement code, or None."""
    for c in (goal.get("achievementStatus") or {}).get("coding") or []:
        if c.get("system") == ACHIEVEMENT:
            return str(c["code"])
    return None


def _position(measure: Measure, value: Any) -> float:
    """A value on a scale where bigger means more (grades by rank)."""
    return float(rank(measure, value)) if measure.grades else float(value)


def _series(goal: dict[str, Any], measures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The progress series of the goal's measure and side (the most recently measured, if several)."""
    fitting = [
        m["series"]
        for m in measures
        if m["measure"] == goal["measure"] and m.get("side") == goal.get("side") and m["series"]
    ]
    return max(fitting, key=lambda s: s[-1]["instant"]) if fitting else []


def evaluate(
    goal: dict[str, Any], start: str, measures: list[dict[str, Any]]
) -> tuple[str, dict[str, Any]] | None:
    """Return (achievement code, latest point) of a clinic goal; None if not measured since start."""
    measure = get(goal["measure"])
    points = _series(goal, measures)
    if measure is None or not points or points[-1]["date"][:10] < start[:10]:
        return None
    latest = points[-1]
    now, target = _position(measure, latest["value"]), _position(measure, goal["target"])
    better = {"higher": 1.0, "lower": -1.0}.get(measure.direction or "", 0.0)
    met = (now - target) * better >= 0 if better else now == target
    if met:
        return "achieved", latest
    if goal.get("due") and latest["date"][:10] > goal["due"]:
        return "not-achieved", latest
    if len(points) == 1:
        return "in-progress", latest
    step = (now - _position(measure, points[-2]["value"])) * better
    return ("improving" if step > 0 else "worsening" if step < 0 else "no-change"), latest


def concept(code: str) -> dict[str, Any]:
    """Return the achievementStatus CodeableConcept of a code."""
    return {"coding": [codes.coding(ACHIEVEMENT, code, ACHIEVEMENTS[code])]}


def updated(goal: dict[str, Any], code: str, observation: str) -> dict[str, Any] | None:
    """Return the Goal with its achievement and outcome set, or None when both are already so."""
    outcome = [{"reference": observation}]
    if achievement_of(goal) == code and goal.get("outcomeReference") == outcome:
        return None
    return {**goal, "achievementStatus": concept(code), "outcomeReference": outcome}


def track(
    goals: list[tuple[str, dict[str, Any]]], observations: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """Return ("Goal/id", new Goal) of each sought goal the observations move (achievement or outcome)."""
    measures = analytics.report(observations)["measures"]
    out = []
    for ref, goal in goals:
        clinic = read_goal(goal)
        if clinic is None or not sought(goal):
            continue
        found = evaluate(clinic, str(goal.get("startDate") or ""), measures)
        if found is None:
            continue
        new = updated(goal, found[0], found[1]["observation"])
        if new is not None:
            out.append((ref, new))
    return out


def view(ref: str, goal: dict[str, Any], measures: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a goal as progress shows it: target, current value, status."""
    clinic = read_goal(goal) or {}
    points = _series(clinic, measures) if clinic else []
    latest = points[-1] if points else None
    out: dict[str, Any] = {
        "goal": ref,
        "description": (goal.get("description") or {}).get("text"),
        "lifecycle": goal.get("lifecycleStatus"),
        "achievement": achievement_of(goal),
        "current": None,
    }
    out |= {k: clinic[k] for k in ("measure", "side", "target", "unit", "due") if k in clinic}
    if latest is not None:
        out["current"] = {
            "value": latest["value"],
            "date": latest["date"],
            "observation": latest["observation"],
        }
    return out
