"""/rehab episode routes, on the "rehab" blueprint (so audited, scoped and documented like the others).

POST /rehab/episodes writes one transaction (Condition, referral ServiceRequest, EpisodeOfCare)
through the FHIR transaction interaction. GET /rehab/episodes/{id} reads the EpisodeOfCare as
a FHIR read would (403 outside the scopes, 404 when the token may not see it, 410 deleted) and
its Encounters, CarePlans and QuestionnaireResponses through searches confined by the policy.
"""

from __future__ import annotations

from typing import Any

import flask
import orjson

from fhir_mapping import episodes
from server.api import rehab_routes as rehab
from server.fhir.interactions.read import current
from server.fhir.interactions.search_type import check_search_access

bp = rehab.bp
# What the episode view reads beside the EpisodeOfCare (searches; each needs a search grant).
VIEW_SEARCHES = ("Encounter", "CarePlan", "QuestionnaireResponse")


def _check_practitioners(payload: dict[str, Any]) -> None:
    for field in ("referring", "care_manager"):
        if payload.get(field):
            rehab.check_exists("Practitioner", payload[field], field)


@bp.post("/episodes")
def post_episode() -> flask.Response:
    return rehab.submit(
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
    return rehab.read_visible(type_, ref.split("/", 1)[1])


def episode_resources(id_: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Return the EpisodeOfCare (read as FHIR reads it) and what links to it that the token may see."""
    ctx, repo = rehab._ctx(), rehab._repo()
    check_search_access(ctx, VIEW_SEARCHES)
    stored = current(repo, "EpisodeOfCare", id_, ctx)
    episode = orjson.loads(stored.body)
    patient = episode["patient"]["reference"]
    linked = rehab.search_all("Encounter", [("episode-of-care", f"EpisodeOfCare/{id_}")])
    for type_ in ("CarePlan", "QuestionnaireResponse"):
        # No search parameter for the workflow-episodeOfCare extension: the patient's, filtered here.
        linked += [
            (ref, r)
            for ref, r in rehab.search_all(type_, [("subject", patient)])
            if episodes.episode_of(r) == id_
        ]
    return episode, linked


@bp.get("/episodes/<id_>")
def get_episode(id_: str) -> flask.Response:
    episode, linked = episode_resources(id_)
    condition = _first(episode, ("diagnosis", "condition"), "Condition")
    referral = _first(episode, ("referralRequest",), "ServiceRequest")
    view = episodes.clinic_view((f"EpisodeOfCare/{id_}", episode), condition, referral, linked)
    return rehab._json(view)
