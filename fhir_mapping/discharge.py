"""POST /rehab/episodes/{id}/discharge: the discharge summary as a FHIR document (a Composition).

The Composition (https://hl7.org/fhir/R4B/composition.html) is `final`, typed LOINC 18842-5
"Discharge summary" (in hl7.fhir.r4b.core 4.3.0 ValueSet-doc-classcodes.json), about the patient,
authored by the discharging practitioner; its `event` is the episode of care (period and
`detail` -> EpisodeOfCare: the service documented). One section each, titled, with a generated
narrative (cmp-1) and `entry` references to what it cites: reason for discharge, the condition
treated, outcome measures (baseline vs discharge Observations), goals (met or not), visits (the
session Encounters), home program (the CarePlans, with adherence). No LOINC section codes are
sent (none verified). GET /Composition/{id}/$document returns it as a `document` Bundle.

Discharge also ends the plan of care, in the same transaction (`closing`): each CarePlan of the
episode and each ServiceRequest linked to it (the visits) still in force (active, on-hold) becomes
`completed` (CodeSystem request-status in hl7.fhir.r4b.core 4.3.0: "fully performed. No further
activity will occur"), and each goal of the episode's plans still sought becomes `completed` when
met (achievementStatus achieved or sustaining), else `cancelled` (goal-status: "the goal has been
abandoned"); its achievementStatus stays as measured. Each is a PUT with If-Match on the version
read, so a change made meanwhile fails the discharge (412) instead of being overwritten.
"""

from __future__ import annotations

import html
from typing import Any

from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from fhir_mapping import codes
from fhir_mapping import goals as goal_status
from fhir_mapping.schemas import IdOf
from fhir_mapping.schemas import date_only

DISCHARGE_SUMMARY = codes.coding(codes.LOINC, "18842-5", "Discharge summary")
XHTML = "http://www.w3.org/1999/xhtml"
IN_FORCE = ("active", "on-hold")  # CarePlan and ServiceRequest statuses a discharge completes
MET = ("achieved", "sustaining")  # goal-achievement codes of a goal met


class DischargeSchema(Schema):
    """POST /rehab/episodes/{id}/discharge."""

    date = date_only(required=True, future=False)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    note = fields.String(validate=validate.Length(min=1, max=4000))
    author = IdOf("Practitioner")


def _div(
    *paragraphs: str, rows: list[list[str]] | None = None, head: list[str] | None = None
) -> dict[str, Any]:
    """A generated narrative: escaped paragraphs, then a table."""
    parts = [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    if rows:
        header = "".join(f"<th>{html.escape(h)}</th>" for h in head or [])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(f"<table><tr>{header}</tr>{body}</table>")
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{"".join(parts) or "<p>None</p>"}</div>'}


def _refs(refs: list[str]) -> list[dict[str, str]]:
    return [{"reference": r} for r in dict.fromkeys(refs)]


def _section(title: str, text: dict[str, Any], refs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"title": title, "text": text}
    if refs:
        out["entry"] = _refs(refs)
    return out


def _value(v: Any, unit: str | None) -> str:
    return "-" if v is None else f"{v:g} {unit}".strip() if isinstance(v, float | int) else str(v)


def measure_rows(measures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline vs discharge of every measure (progress series entries)."""
    rows = []
    for m in measures:
        first, last = m["series"][0], m["series"][-1]
        rows.append(
            {
                "measure": m["measure"],
                "display": m["display"],
                "side": m.get("side"),
                "unit": m.get("unit"),
                "baseline": {
                    "value": m["baseline"],
                    "date": first["date"],
                    "observation": first["observation"],
                },
                "discharge": {"value": m["latest"], "date": last["date"], "observation": last["observation"]},
                "change": m.get("change"),
                "mcid_reached": m.get("mcid_reached"),
            }
        )
    return rows


def summary(
    reason: str,
    note: str | None,
    view: dict[str, Any],
    measures: list[dict[str, Any]],
    goals: list[dict[str, Any]],
    home_program: list[dict[str, Any]],
) -> dict[str, Any]:
    """Return the clinic summary: reason, measures, goals met or not, visits used, home program."""
    poc = view.get("plan_of_care")
    out: dict[str, Any] = {
        "reason": reason,
        "condition": view.get("condition"),
        "measures": measure_rows(measures),
        "goals": [{**g, "met": g.get("achievement") in MET} for g in goals],
        "visits": {
            "used": view["visits_used"],
            "authorized": poc["visits_authorized"] if poc else None,
            "sessions": [s["encounter"] for s in view["sessions"]],
        },
        "home_program": home_program,
    }
    if note:
        out["note"] = note
    return out


def composition(
    data: dict[str, Any],
    *,
    patient: str,
    author: str,
    episode: str,
    period: dict[str, str],
    date: str,
    condition: str | None,
) -> dict[str, Any]:
    """Return the discharge summary Composition of a summary (see `summary`)."""
    measure_table = [
        [
            r["display"] + (f" ({r['side']})" if r.get("side") else ""),
            f"{_value(r['baseline']['value'], r['unit'])} ({r['baseline']['date'][:10]})",
            f"{_value(r['discharge']['value'], r['unit'])} ({r['discharge']['date'][:10]})",
            {True: "yes", False: "no", None: "-"}[r["mcid_reached"]],
        ]
        for r in data["measures"]
    ]
    goal_table = [
        [
            g.get("description") or g.get("measure") or g["goal"],
            _value(g.get("target"), g.get("unit")),
            _value((g.get("current") or {}).get("value"), g.get("unit")),
            "met" if g["met"] else (g.get("achievement") or "not assessed"),
        ]
        for g in data["goals"]
    ]
    visits = data["visits"]
    authorized = f" of {visits['authorized']} authorized" if visits["authorized"] is not None else ""
    program = [
        [e["exercise"], _value(e.get("percent"), "%")]
        for plan in data["home_program"]
        for e in plan["exercises"]
    ]
    cond = data.get("condition") or {}
    sections = [
        _section(
            "Reason for discharge", _div(data["reason"], *([data["note"]] if data.get("note") else [])), []
        ),
        _section(
            "Condition treated",
            _div(
                f"{cond.get('display') or ''} {cond.get('system', '')} {cond.get('code', '')}".strip() or "-"
            ),
            [condition] if condition else [],
        ),
        _section(
            "Outcome measures: baseline and discharge",
            _div(rows=measure_table, head=["Measure", "Baseline", "Discharge", "MCID reached"]),
            [r[k]["observation"] for r in data["measures"] for k in ("baseline", "discharge")],
        ),
        _section(
            "Goals",
            _div(rows=goal_table, head=["Goal", "Target", "Last value", "Status"]),
            [g["goal"] for g in data["goals"]],
        ),
        _section("Visits", _div(f"{visits['used']} visits used{authorized}"), visits["sessions"]),
        _section(
            "Home program",
            _div(rows=program, head=["Exercise", "Adherence"]),
            [plan["plan"] for plan in data["home_program"]],
        ),
    ]
    return {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [DISCHARGE_SUMMARY]},
        "subject": {"reference": patient},
        "date": date,
        "author": [{"reference": author}],
        "title": "Rehabilitation discharge summary",
        "event": [{"period": period, "detail": [{"reference": episode}]}],
        "section": sections,
    }


def closing(
    requests: list[tuple[str, dict[str, Any]]], goals: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(Type/id, stored, new) of what a discharge closes: CarePlans and ServiceRequests still in force
    completed, goals still sought completed when met, else cancelled (achievementStatus kept)."""
    out = []
    for ref, resource in requests:
        if resource.get("status") in IN_FORCE:
            out.append((ref, resource, {**resource, "status": "completed"}))
    for ref, goal in goals:
        if goal_status.sought(goal):
            met = goal_status.achievement_of(goal) in MET
            out.append((ref, goal, {**goal, "lifecycleStatus": "completed" if met else "cancelled"}))
    return out
