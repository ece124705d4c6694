"""POST /rehab/episodes/{id}/discharge on the "rehab" blueprint: close the episode, write the summary.

One transaction (scopes and audit as for any FHIR transaction): the discharge summary Composition
(fhir_mapping.discharge) is created and the EpisodeOfCare is PUT back `finished`, its period ended
and the status it had kept in `statusHistory`, with If-Match on the version read (two discharges at
once cannot both win; a second one is a 400 naming `episode`). The plan of care ends with it
(discharge.closing): the episode's CarePlans and linked ServiceRequests still in force become
`completed`, its plans' goals still sought `completed` if met else `cancelled`, each a PUT with
If-Match on the version read (so the token needs their updates too, or nothing is written).
The summary covers the episode's period: measures of the patient dated from the episode's start
to the discharge date, the goals of the episode's plans, its session Encounters, and its plans'
home programs with their adherence.
GET /Composition/{id}/$document returns the document.
"""

from __future__ import annotations

from typing import Any

import flask

from fhir_mapping import adherence
from fhir_mapping import analytics
from fhir_mapping import discharge
from fhir_mapping import episodes
from fhir_mapping import goals
from fhir_mapping import schemas
from fhir_mapping import sessions
from fhir_mapping.transaction import urn
from server.api import requests as rq
from server.api.rehab_episodes import clinic
from server.api.rehab_support import TRACK_ATTEMPTS
from server.api.rehab_support import bp
from server.api.rehab_support import check_exists
from server.api.rehab_support import current_ctx
from server.api.rehab_support import json_response
from server.api.rehab_support import put_entry
from server.api.rehab_support import read_visible
from server.api.rehab_support import run_transaction
from server.api.rehab_support import search_all
from server.api.rehab_support import unstamped
from server.errors import InvalidRequestError
from server.errors import PreconditionFailedError


def _author(payload: dict[str, Any], episode: dict[str, Any]) -> str:
    """The discharging practitioner: given, else the token's, else the episode's care manager."""
    if payload.get("author"):
        check_exists("Practitioner", payload["author"], "author")
        return f"Practitioner/{payload['author']}"
    found = sessions.performer_of(current_ctx().fhir_user) or (episode.get("careManager") or {}).get(
        "reference"
    )
    if not found:
        raise InvalidRequestError("Name the discharging practitioner (author)", expression=("author",))
    return str(found)


def _closed(episode: dict[str, Any], end: str) -> dict[str, Any]:
    """The EpisodeOfCare finished on `end`, the status it had kept in statusHistory."""
    period = {**(episode.get("period") or {}), "end": end}
    history = [*(episode.get("statusHistory") or []), {"status": episode["status"], "period": period}]
    return {**unstamped(episode), "status": "finished", "period": period, "statusHistory": history}


def _goals(plans: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The goals of the episode's plans that the token may read ("Goal/id", Goal)."""
    refs = [str(g.get("reference") or "") for _, plan in plans for g in plan.get("goal") or []]
    found = []
    for ref in dict.fromkeys(r for r in refs if r.startswith("Goal/")):
        goal = read_visible("Goal", ref.split("/", 1)[1])
        if goal is not None:
            found.append((ref, goal))
    return found


def _requests(id_: str, patient: str) -> list[tuple[str, dict[str, Any]]]:
    """The ServiceRequests linked to the episode (its plan of care's visits)."""
    return [
        (ref, r)
        for ref, r in search_all("ServiceRequest", [("subject", patient)])
        if episodes.episode_of(r) == id_
    ]


def _gather(
    payload: dict[str, Any],
    view: dict[str, Any],
    plans: list[tuple[str, dict[str, Any]]],
    episode_goals: list[tuple[str, dict[str, Any]]],
) -> dict[str, Any]:
    """The summary's facts: measures in the episode's period, the plans' goals and home programs."""
    start, end = str(view.get("start") or "")[:10], payload["date"]
    observations = search_all("Observation", [("subject", f"Patient/{view['patient']}")])
    dated = [
        (ref, obs)
        for ref, obs in observations
        if start
        <= str(obs.get("effectiveDateTime") or obs.get("effectivePeriod", {}).get("start") or "")[:10]
        <= end
    ]
    measures = analytics.report(dated)["measures"]
    goal_views = [goals.view(ref, goal, measures) for ref, goal in episode_goals]
    everything = [obs for _, obs in observations]
    program = [
        adherence.report(ref, plan, everything) for ref, plan in plans if adherence.plan_exercises(plan)
    ]
    return discharge.summary(payload["reason"], payload.get("note"), view, measures, goal_views, program)


@bp.post("/episodes/<id_>/discharge")
def post_discharge(id_: str) -> flask.Response:
    payload = schemas.load(discharge.DischargeSchema(), rq.parse_body())
    for attempt in range(1, TRACK_ATTEMPTS + 1):
        try:
            return _discharge(id_, payload)
        except PreconditionFailedError:
            # Something it PUTs back (the episode, a plan, a goal) changed since it was read: the
            # transaction wrote nothing. Read everything again: a discharge that won meanwhile makes
            # this one a 400 naming `episode`; a goal moved by a measurement is simply taken as it is.
            if attempt == TRACK_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _discharge(id_: str, payload: dict[str, Any]) -> flask.Response:
    episode, linked, view = clinic(id_)
    if episode["status"] in episodes.CLOSED:
        raise InvalidRequestError(
            f"EpisodeOfCare/{id_} is already {episode['status']}", expression=("episode",)
        )
    if payload["date"] < str(view.get("start") or "")[:10]:
        raise InvalidRequestError(f"{payload['date']} is before the episode's start", expression=("date",))
    author = _author(payload, episode)
    plans = [(ref, r) for ref, r in linked if r["resourceType"] == "CarePlan"]
    episode_goals = _goals(plans)
    summary = _gather(payload, view, plans, episode_goals)
    ended = discharge.closing([*plans, *_requests(id_, episode["patient"]["reference"])], episode_goals)
    condition = ((episode.get("diagnosis") or [{}])[0].get("condition") or {}).get("reference")
    composition = discharge.composition(
        summary,
        patient=episode["patient"]["reference"],
        author=author,
        episode=f"EpisodeOfCare/{id_}",
        # An EpisodeOfCare written through FHIR may have no start: the period then only ends.
        period={**({"start": str(view["start"])} if view.get("start") else {}), "end": payload["date"]},
        date=payload["date"],
        condition=condition,
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn(), "resource": composition, "request": {"method": "POST", "url": "Composition"}},
            put_entry(f"EpisodeOfCare/{id_}", episode, _closed(episode, payload["date"])),
            *(put_entry(ref, old, new) for ref, old, new in ended),
        ],
    }
    body = run_transaction(bundle)
    location = str(body["entry"][0]["response"]["location"]).split("/_history/")[0]
    ref = "/".join(location.split("/")[-2:])
    return json_response(
        {
            "episode": id_,
            "status": "finished",
            "composition": ref,
            "document": f"{ref}/$document",
            "summary": summary,
        },
        201,
    )
