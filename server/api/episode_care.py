"""The episode's plan of care as the /rehab routes need it: find it, check a new one, warn about visits.

The plan of care is the episode's active CarePlan with the ServiceRequest for its visits
(fhir_mapping.plan_of_care); their versions hold every certification (re-certification writes a
new version of both). Visits are the episode's session Encounters (Encounter.episodeOfCare), counted
when needed, never stored. Everything is read through the access policy (rehab_support).
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_mapping import episodes
from fhir_mapping import plan_of_care
from fhir_mapping import plans
from fhir_mapping.assessments import ENCOUNTER_SESSION
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from server.api.rehab_support import check_episode
from server.api.rehab_support import check_exists
from server.api.rehab_support import current_repo
from server.api.rehab_support import read_visible
from server.api.rehab_support import search_all
from server.errors import InvalidRequestError


def _certifications(plan: str, request: str, version: int) -> list[dict[str, Any]]:
    """Every certification held, oldest first: version n of the CarePlan with version n of its visits."""
    repo = current_repo()
    found = []
    for v in range(1, version + 1):
        stored = [repo.read_version(*ref.split("/", 1), v) for ref in (plan, request)]  # type: ignore[call-arg]
        if all(s is not None and s.body for s in stored):
            found.append(plan_of_care.read_certification(*(orjson.loads(s.body) for s in stored)))  # type: ignore[union-attr]
    return found


PlanOfCare = tuple[tuple[str, str], dict[str, Any], dict[str, Any], list[dict[str, Any]]]


def find(episode: str, patient: str, statuses: tuple[str, ...] = ("active",)) -> PlanOfCare | None:
    """Return the plan of care of an episode: (CarePlan and ServiceRequest refs), both, certifications.

    `statuses`: of the CarePlan and its visits; a finished episode's plan of care is `completed`
    (the discharge completed it), and its view still shows it.
    """
    for ref, request in search_all("ServiceRequest", [("subject", patient)]):
        if episodes.episode_of(request) != episode or request["status"] not in statuses:
            continue
        based = str(((request.get("basedOn") or [{}])[0]).get("reference") or "")
        plan = (
            read_visible("CarePlan", based.removeprefix("CarePlan/"))
            if based.startswith("CarePlan/")
            else None
        )
        if plan_of_care.is_visits(request) and plan is not None and plan["status"] in statuses:
            version = int(plan["meta"]["versionId"])
            return (based, ref), plan, request, _certifications(based, ref, version)
    return None


def is_session(encounter: dict[str, Any]) -> bool:
    """Whether an Encounter is one of our treatment sessions."""
    return any(
        c.get("code") == ENCOUNTER_SESSION for t in encounter.get("type") or [] for c in t.get("coding") or []
    )


def session_dates(episode: str) -> list[str]:
    """The start of every session Encounter of the episode, in order."""
    found = search_all("Encounter", [("episode-of-care", f"EpisodeOfCare/{episode}")])
    return sorted(e["period"]["start"] for _, e in found if is_session(e))


def check_plan(payload: dict[str, Any], certified: dict[str, Any]) -> None:
    """Refuse a second plan of care for an episode and an unknown author; note the episode's Condition."""
    if payload.get("author"):
        check_exists("Practitioner", payload["author"], "author")
    if not payload.get("certification"):
        return None
    episode = check_episode(payload["episode"], payload["patient"])
    existing = find(payload["episode"], payload["patient"])
    if existing is not None:
        raise InvalidRequestError(
            f"EpisodeOfCare/{payload['episode']} has its plan of care, {existing[0]}: re-certify it with "
            f"POST /rehab/episodes/{payload['episode']}/recertification",
            expression=("certification",),
        )
    diagnosis = (episode.get("diagnosis") or [{}])[0]
    certified["condition"] = (diagnosis.get("condition") or {}).get("reference")
    return None


def build_plan(payload: dict[str, Any], certified: dict[str, Any], performer: str | None) -> list[Entry]:
    """Return the plan's entries; a certified one is the plan of care plus a ServiceRequest for its visits."""
    entries = plans.build_plan(payload)
    careplan = next(e for e in entries if e.role == "careplan")
    author = f"Practitioner/{payload['author']}" if payload.get("author") else None
    cert = payload.get("certification")
    if cert:
        plan = plan_of_care.certify(careplan.resource, cert, certified.get("condition"), author or performer)
        request = plan_of_care.visits_request(cert, plan, careplan.full_url, author or performer)
        entries.append(entry("visits", request))
    elif author:
        careplan.resource["author"] = {"reference": author}
    return entries


def session_warnings(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Return the warnings a session of an episode gets (beyond the visits authorized, outside the period)."""
    if not payload.get("episode"):
        return None
    found = find(payload["episode"], payload["patient"])
    if found is None:
        return {"warnings": []}
    visits = [(when, False) for when in session_dates(payload["episode"])] + [(payload["date"], True)]
    visits.sort()
    warned = plan_of_care.visit_warnings(found[3], [when for when, _ in visits])
    return {"warnings": next(w for w, (_, new) in zip(warned, visits, strict=True) if new)}
