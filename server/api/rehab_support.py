"""What every /rehab route shares: the blueprint, the request's repository and access context,
the checks a clinic payload passes, the one-transaction write and the policy-confined search.

Every POST validates with the fhir_mapping schema (400 naming the field, nothing stored),
builds one transaction Bundle and runs it through the FHIR transaction interaction, so it is
atomic and passes the same scope checks and auditing as POST / of a Bundle. Reads go through
the repository search, confined to what the token may see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import flask
import orjson
from marshmallow import Schema

from fhir_mapping import episodes
from fhir_mapping import schemas
from fhir_mapping import transaction
from server.api import requests as rq
from server.audit.flask_integration import name_patient
from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.errors import PreconditionFailedError
from server.fhir.access import AccessContext
from server.fhir.access import restrict_query
from server.fhir.access import version_visible
from server.fhir.access import visible
from server.fhir.interactions.bundle import process_bundle
from server.fhir.repository import FhirRepository
from server.fhir.search.params import parse_search

bp = flask.Blueprint("rehab", __name__, url_prefix="/rehab")
_PAGE = 1000

Build = Callable[[dict[str, Any]], list[transaction.Entry]]
Read = Callable[[list[transaction.Entry]], dict[str, Any]]

log = logging.getLogger("rehabfhir.rehab")


def current_repo() -> FhirRepository:
    """The request's repository (built by the before_request hook)."""
    return flask.g.repo  # type: ignore[no-any-return]


def current_ctx() -> AccessContext:
    """The request's access context (the token's grants)."""
    return flask.g.access  # type: ignore[no-any-return]


def json_response(body: Any, status: int = 200) -> flask.Response:
    """Answer a clinic view as JSON."""
    return flask.Response(orjson.dumps(body), status=status, mimetype="application/json")


def check_patient(patient: str, error: type[InvalidRequestError] | type[NotFoundError]) -> None:
    """A patient the token may not see does not exist, as on every FHIR path."""
    repo, ctx = current_repo(), current_ctx()
    if _patient_app(ctx) and patient != ctx.patient:  # before anything else could tell (an episode)
        raise error(f"Patient/{patient} does not exist", expression=("patient",))
    stored = repo.read_resource("Patient", patient)
    hidden = ctx.can("Patient", "r") and stored is not None and not version_visible(repo, ctx, stored, "r")
    if stored is None or stored.deleted or hidden:
        raise error(f"Patient/{patient} does not exist", expression=("patient",))


def _patient_app(ctx: AccessContext) -> bool:
    """A token of one patient's app: every rule it holds is confined to its patient's compartment."""
    return not ctx.unrestricted and ctx.patient is not None and all(r.context == "patient" for r in ctx.rules)


def check_compartment(patient: str, types: Iterable[str]) -> None:
    """Another patient does not exist for a token whose writes are confined to its own patient.

    check_patient can tell only with Patient read; without it (a patient app with
    patient/Observation.c alone) another patient's id passed, and its write was then refused 403
    where an unknown id got 400: an oracle of which patient ids exist. Now both are 400.
    """
    ctx = current_ctx()
    for type_ in sorted(types):
        own = ctx.compartment_patient(type_, "c")
        if own is not None and own != patient:
            raise InvalidRequestError(f"Patient/{patient} does not exist", expression=("patient",))


def read_visible(type_: str, id_: str) -> dict[str, Any] | None:
    """Return a live resource the token may read, else None (for what a view shows beside its subject)."""
    repo, ctx = current_repo(), current_ctx()
    stored = repo.read_resource(type_, id_)
    if stored is None or stored.deleted or not version_visible(repo, ctx, stored, "r"):
        return None
    return orjson.loads(stored.body)  # type: ignore[no-any-return]


def check_exists(type_: str, id_: str, field: str) -> dict[str, Any]:
    """Return a resource a payload names, or 400 naming the field (hidden from the token: does not exist)."""
    found = read_visible(type_, id_)
    if found is None:
        raise InvalidRequestError(f"{type_}/{id_} does not exist", expression=(field,))
    return found


def check_episode(episode: str, patient: str) -> dict[str, Any]:
    """Return the open episode a payload links to, else 400 naming `episode` (unknown, another's, closed)."""
    found = check_exists("EpisodeOfCare", episode, "episode")
    if found["patient"].get("reference") != f"Patient/{patient}":
        raise InvalidRequestError(
            f"EpisodeOfCare/{episode} is not Patient/{patient}'s", expression=("episode",)
        )
    if found["status"] in episodes.CLOSED:
        raise InvalidRequestError(f"EpisodeOfCare/{episode} is {found['status']}", expression=("episode",))
    return found


def submit(
    schema: Schema,
    build: Build,
    read: Read,
    extra: Callable[[list[transaction.Entry]], dict[str, Any]] | None = None,
    check: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    track: Callable[[str, list[transaction.Entry]], list[Update]] | None = None,
) -> flask.Response:
    """Validate a clinic payload, write what it builds in one transaction, answer its clinic view.

    `check` runs before anything is written: it raises to refuse, or returns keys for the view
    (e.g. warnings the clinic should see). `track` returns updates of stored resources the new
    ones change (e.g. goals a measurement moves), written in the same transaction.
    """
    payload = schemas.load(schema, rq.parse_body())
    check_patient(payload["patient"], InvalidRequestError)
    if payload.get("episode"):
        check_episode(payload["episode"], payload["patient"])
    before = check(payload) if check is not None else None
    entries = episodes.link(build(payload), payload.get("episode"))
    check_compartment(payload["patient"], {e.resource["resourceType"] for e in entries})
    name_patient(f"Patient/{payload['patient']}")  # a refusal from here on names whose data it was
    for attempt in range(1, TRACK_ATTEMPTS + 1):
        updates = track(payload["patient"], entries) if track is not None else []
        bundle = orjson.loads(orjson.dumps(transaction.bundle(entries)))  # each attempt its own copy
        bundle["entry"] += [put_entry(*u) for u in updates]
        try:
            body = run_transaction(bundle)
            break
        except PreconditionFailedError:
            # Another request changed a tracked resource (a goal) since `track` read it: the
            # transaction wrote nothing; read again and recompute, up to TRACK_ATTEMPTS times.
            if not updates or attempt == TRACK_ATTEMPTS:
                raise
            log.info("a tracked resource changed meanwhile: attempt %d of %d", attempt + 1, TRACK_ATTEMPTS)
    view = read(entries)
    if extra is not None:
        view.update(extra(entries))
    view.update(before or {})
    if payload.get("episode"):
        view["episode"] = payload["episode"]
    if updates:
        view["updated"] = [{"reference": ref, "summary": summary} for ref, _, _, summary in updates]
    view["references"] = transaction.references(entries, body)
    return json_response(view, 201)


# (Type/id, the stored resource, the new one, what changed): a PUT with If-Match on the stored version.
# Two measurements of one patient at once: the second's If-Match on the goal fails (412); it reads
# the goal again and recomputes, so neither clinician sees an error for the other's write.
TRACK_ATTEMPTS = 3
Update = tuple[str, dict[str, Any], dict[str, Any], str]


def unstamped(resource: dict[str, Any]) -> dict[str, Any]:
    """A stored resource to PUT back: the server's meta dropped, the profiles it claims kept."""
    out = {k: v for k, v in resource.items() if k != "meta"}
    if (resource.get("meta") or {}).get("profile"):
        out["meta"] = {"profile": resource["meta"]["profile"]}
    return out


def put_entry(ref: str, old: dict[str, Any], new: dict[str, Any], _summary: str = "") -> dict[str, Any]:
    """The transaction entry writing `new` over `old` (If-Match: two writers cannot both win)."""
    return {
        "resource": unstamped(new),
        "request": {"method": "PUT", "url": ref, "ifMatch": f'W/"{old["meta"]["versionId"]}"'},
    }


def run_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """Run a transaction Bundle through the FHIR interaction (scopes, audit); return its response Bundle."""
    answer = process_bundle(current_repo(), current_ctx(), rq.fhir_request(bundle))
    return answer.body if isinstance(answer.body, dict) else orjson.loads(answer.body or "{}")  # type: ignore[no-any-return]


def search_all(type_: str, criteria: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """Return ("Type/id", resource) of every match the token may see, paged over the SQL matches."""
    ctx, repo = current_ctx(), current_repo()
    req = rq.fhir_request(params=())
    found: list[tuple[str, dict[str, Any]]] = []
    offset = 0
    while True:
        params = [*criteria, ("_count", str(_PAGE)), ("_offset", str(offset))]
        query = restrict_query(ctx, parse_search(req, (type_,), params=params))
        result = repo.search(query)
        # Each match is still asked of the policy.
        found += [(f"{type_}/{m.id}", orjson.loads(m.body)) for m in visible(ctx, result.matches, "s")]
        offset += len(result.matches)
        if not result.has_next or not result.matches:
            break
    return found
