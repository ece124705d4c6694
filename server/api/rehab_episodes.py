"""/rehab episode routes, on the "rehab" blueprint (so audited, scoped and documented like the others).

POST /rehab/episodes writes one transaction (Condition, referral ServiceRequest, EpisodeOfCare)
through the FHIR transaction interaction. GET /rehab/episodes/{id} reads the EpisodeOfCare as
a FHIR read would (403 outside the scopes, 404 when the token may not see it, 410 deleted) and
its Encounters, CarePlans and QuestionnaireResponses through searches confined by the policy.
POST /rehab/episodes/{id}/recertification writes a new version of the plan of care (a
transaction with one conditional PUT, If-Match on the version read, so two clinicians
re-certifying at once cannot overwrite each other).
"""

from __future__ import annotations

from typing import Any

import flask
import orjson

from fhir_mapping import episodes
from fhir_mapping import plan_of_care
from fhir_mapping import schemas
from server.api import episode_care
from server.api import requests as rq
from server.api.rehab_support import bp
from server.api.rehab_support import check_exists
from server.api.rehab_support import current_ctx
from server.api.rehab_support import current_repo
from server.api.rehab_support import json_response
from server.api.rehab_support import put_entry
from server.api.rehab_support import read_visible
from server.api.rehab_support import run_transaction
from server.api.rehab_support import search_all
from server.api.rehab_support import submit
from server.api.rehab_support import unstamped
from server.audit.flask_integration import name_patient
from server.errors import InvalidRequestError
from server.fhir.interactions.read import current
from server.fhir.interactions.search_type import check_search_access

# What the episode view reads beside the EpisodeOfCare (searches; each needs a search grant).
VIEW_SEARCHES = ("Encounter", "CarePlan", "QuestionnaireResponse", "ServiceRequest")


def _check_practitioners(payload: dict[str, Any]) -> None:
    for field in ("referring", "care_manager"):
        if payload.get(field):
            check_exists("Practitioner", payload[field], field)


@bp.post("/episodes")
def post_episode() -> flask.Response:
    return submit(
        episodes.EpisodeSchema(), episodes.build_episode, episodes.read_built, check=_check_practitioners
    )


def _first(resource: dict[str, Any], path: tuple[str, ...], type_: str) -> dict[str, Any] | None:
    """Read the first reference at `path` (e.g. diagnosis/condition) if it is a visible `type_`."""
    value: Any = resource
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = value[0] if value else None
    ref = str((value or {}).get("reference") or "")
    if not ref.startswith(f"{type_}/"):
        return None
    return read_visible(type_, ref.split("/", 1)[1])


def read_episode(id_: str) -> dict[str, Any]:
    """Read the EpisodeOfCare as FHIR reads it (403 outside the scopes, 404 hidden/unknown, 410 deleted).

    Once read, the request's audit event names the episode's patient (answered or refused after).
    """
    episode: dict[str, Any] = orjson.loads(current(current_repo(), "EpisodeOfCare", id_, current_ctx()).body)
    name_patient((episode.get("patient") or {}).get("reference"))
    return episode


def episode_resources(id_: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Return the EpisodeOfCare and what links to it that the token may see."""
    check_search_access(current_ctx(), VIEW_SEARCHES)
    episode = read_episode(id_)
    patient = episode["patient"]["reference"]
    linked = search_all("Encounter", [("episode-of-care", f"EpisodeOfCare/{id_}")])
    for type_ in ("CarePlan", "QuestionnaireResponse"):
        # No search parameter for the workflow-episodeOfCare extension: the patient's, filtered here.
        linked += [
            (ref, r) for ref, r in search_all(type_, [("subject", patient)]) if episodes.episode_of(r) == id_
        ]
    return episode, linked


def discharge_of(id_: str, patient: str) -> str | None:
    """The discharge summary Composition of an episode (its event.detail), if the token may search them."""
    if not current_ctx().can("Composition", "s"):
        return None
    for ref, comp in search_all("Composition", [("subject", patient)]):
        details = [d.get("reference") for e in comp.get("event") or [] for d in e.get("detail") or []]
        if f"EpisodeOfCare/{id_}" in details:
            return ref
    return None


def clinic(id_: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Return the EpisodeOfCare, what links to it, and its clinic view (without its discharge)."""
    episode, linked = episode_resources(id_)
    condition = _first(episode, ("diagnosis", "condition"), "Condition")
    referral = _first(episode, ("referralRequest",), "ServiceRequest")
    # A finished episode's plan of care was completed with it (rehab_discharge): still the one it had.
    statuses = ("active", "completed") if episode["status"] in episodes.CLOSED else ("active",)
    found = episode_care.find(id_, episode["patient"]["reference"], statuses)
    plan = (found[0], int(found[1]["meta"]["versionId"]), found[3]) if found else None
    view = episodes.clinic_view((f"EpisodeOfCare/{id_}", episode), condition, referral, linked, plan)
    return episode, linked, view


@bp.get("/episodes/<id_>")
def get_episode(id_: str) -> flask.Response:
    episode, _, view = clinic(id_)
    view["discharge"] = discharge_of(id_, episode["patient"]["reference"])
    return json_response(view)


@bp.post("/episodes/<id_>/recertification")
def post_recertification(id_: str) -> flask.Response:
    cert = schemas.load(schemas.CertificationSchema(), rq.parse_body())
    episode = read_episode(id_)
    if episode["status"] in episodes.CLOSED:
        raise InvalidRequestError(f"EpisodeOfCare/{id_} is {episode['status']}", expression=("episode",))
    found = episode_care.find(id_, episode["patient"]["reference"])
    if found is None:
        raise InvalidRequestError(
            f"EpisodeOfCare/{id_} has no plan of care to re-certify (POST /rehab/plans with a certification)",
            expression=("certification",),
        )
    (plan_ref, request_ref), plan, request, _ = found
    renewed = plan_of_care.certify(unstamped(plan), cert)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            put_entry(plan_ref, plan, renewed),
            put_entry(request_ref, request, plan_of_care.renew(unstamped(request), cert, renewed, None)),
        ],
    }
    body = run_transaction(bundle)
    location = str(body["entry"][0]["response"]["location"])
    return json_response(
        {
            "episode": id_,
            "careplan": plan_ref,
            "request": request_ref,
            "version": int(location.rsplit("/_history/", 1)[1]),
            "certification": cert,
        }
    )
