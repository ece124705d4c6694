"""/rehab goal routes and goal tracking, on the "rehab" blueprint.

A POST that writes measurements (assessment, session, outcome) also rewrites, in its own
transaction, every goal of the patient the new values move (fhir_mapping.goals: achievementStatus
and outcomeReference), when the token may search and update Goals (else the goals are left as
they were and the answer lists none). PATCH /rehab/goals/{id} sets achievement, lifecycle or a
note by hand: a new Goal version, If-Match on the version read, through the same transaction
interaction (scopes, audit).
"""

from __future__ import annotations

from typing import Any

import flask
import orjson

from fhir_mapping import goals
from fhir_mapping import schemas
from fhir_mapping.transaction import Entry
from server.api import requests as rq
from server.api.rehab_support import Update
from server.api.rehab_support import bp
from server.api.rehab_support import current_ctx
from server.api.rehab_support import current_repo
from server.api.rehab_support import json_response
from server.api.rehab_support import put_entry
from server.api.rehab_support import run_transaction
from server.api.rehab_support import search_all
from server.audit.flask_integration import name_patient
from server.fhir.interactions.read import current


def may_track() -> bool:
    """Whether the token may read the goals and observations tracking needs and rewrite goals."""
    ctx = current_ctx()
    return ctx.can("Goal", "s") and ctx.can("Goal", "u") and ctx.can("Observation", "s")


def track(patient: str, entries: list[Entry]) -> list[Update]:
    """Return the goal updates the new Observations of a write bring about."""
    new = [(e.full_url, e.resource) for e in entries if e.resource["resourceType"] == "Observation"]
    if not new or not may_track():
        return []
    found = [
        (ref, g) for ref, g in search_all("Goal", [("subject", f"Patient/{patient}")]) if goals.sought(g)
    ]
    measured = goals.measure_codes([g for _, g in found])
    if not measured:
        return []
    # Only the points of the goals' measures: the cost follows them, not the patient's whole history.
    stored = search_all("Observation", [("subject", f"Patient/{patient}"), ("code", ",".join(measured))])
    old = dict(found)
    return [
        (ref, old[ref], goal, goals.achievement_of(goal) or "")
        for ref, goal in goals.track(found, stored + new)
    ]


def progress_goals(patient: str, measures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of the patient with its target, current value and status (none without Goal search)."""
    if not current_ctx().can("Goal", "s"):
        return []
    found = search_all("Goal", [("subject", f"Patient/{patient}")])
    return [goals.view(ref, goal, measures) for ref, goal in found]


@bp.patch("/goals/<id_>")
def patch_goal(id_: str) -> flask.Response:
    change = schemas.load(goals.GoalPatchSchema(), rq.parse_body())
    stored = current(current_repo(), "Goal", id_, current_ctx(), "u")
    goal = orjson.loads(stored.body)
    name_patient((goal.get("subject") or {}).get("reference"))
    new = dict(goal)
    if "achievement" in change:
        new["achievementStatus"] = goals.concept(change["achievement"])
    if "lifecycle" in change:
        new["lifecycleStatus"] = change["lifecycle"]
    if "note" in change:
        new["note"] = [*(goal.get("note") or []), {"text": change["note"]}]
    body = run_transaction(
        {"resourceType": "Bundle", "type": "transaction", "entry": [put_entry(f"Goal/{id_}", goal, new)]}
    )
    location = str(body["entry"][0]["response"]["location"])
    return json_response(
        {
            "goal": f"Goal/{id_}",
            "version": int(location.rsplit("/_history/", 1)[1]),
            "lifecycle": new["lifecycleStatus"],
            "achievement": goals.achievement_of(new),
            "notes": [n["text"] for n in new.get("note") or [] if n.get("text")],
        }
    )
