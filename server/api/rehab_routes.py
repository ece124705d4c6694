"""Blueprint "rehab": clinic payloads in, one FHIR transaction each, the clinic view and references out.

Every POST validates with the fhir_mapping schema (400 naming the field, nothing stored),
builds one transaction Bundle and runs it through the FHIR transaction interaction, so it is
atomic and passes the same scope checks and auditing as POST / of a Bundle. Progress reads
Observations through the repository search, confined to what the token may see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import flask
import orjson
from marshmallow import Schema

from fhir_mapping import analytics
from fhir_mapping import assessments
from fhir_mapping import catalog
from fhir_mapping import episodes
from fhir_mapping import outcomes
from fhir_mapping import plans
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from fhir_mapping import transaction
from server.api import requests as rq
from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.fhir.access import SYSTEM
from server.fhir.access import AccessContext
from server.fhir.access import restrict_query
from server.fhir.access import version_visible
from server.fhir.access import visible
from server.fhir.http import FhirRequest
from server.fhir.interactions.bundle import process_bundle
from server.fhir.interactions.search_type import check_search_access
from server.fhir.operations import terminology
from server.fhir.repository import FhirRepository
from server.fhir.search.params import parse_search
from server.settings import Settings

log = logging.getLogger("rehabfhir.rehab")
bp = flask.Blueprint("rehab", __name__, url_prefix="/rehab")
_PAGE = 1000

Build = Callable[[dict[str, Any]], list[transaction.Entry]]
Read = Callable[[list[transaction.Entry]], dict[str, Any]]


def _repo() -> FhirRepository:
    return flask.g.repo  # type: ignore[no-any-return]


def _ctx() -> AccessContext:
    return flask.g.access  # type: ignore[no-any-return]


def _json(body: Any, status: int = 200) -> flask.Response:
    return flask.Response(orjson.dumps(body), status=status, mimetype="application/json")


def _check_patient(patient: str, error: type[InvalidRequestError] | type[NotFoundError]) -> None:
    """A patient the token may not see does not exist, as on every FHIR path."""
    repo, ctx = _repo(), _ctx()
    stored = repo.read_resource("Patient", patient)
    hidden = ctx.can("Patient", "r") and stored is not None and not version_visible(repo, ctx, stored, "r")
    if stored is None or stored.deleted or hidden:
        raise error(f"Patient/{patient} does not exist", expression=("patient",))


def read_visible(type_: str, id_: str) -> dict[str, Any] | None:
    """Return a live resource the token may read, else None (for what a view shows beside its subject)."""
    repo, ctx = _repo(), _ctx()
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
    check: Callable[[dict[str, Any]], None] | None = None,
) -> flask.Response:
    """Validate a clinic payload, write what it builds in one transaction, answer its clinic view."""
    payload = schemas.load(schema, rq.parse_body())
    _check_patient(payload["patient"], InvalidRequestError)
    if payload.get("episode"):
        check_episode(payload["episode"], payload["patient"])
    if check is not None:
        check(payload)
    entries = episodes.link(build(payload), payload.get("episode"))
    answer = process_bundle(_repo(), _ctx(), rq.fhir_request(transaction.bundle(entries)))
    body = answer.body if isinstance(answer.body, dict) else orjson.loads(answer.body or "{}")
    view = read(entries)
    if extra is not None:
        view.update(extra(entries))
    if payload.get("episode"):
        view["episode"] = payload["episode"]
    view["references"] = transaction.references(entries, body)
    return _json(view, 201)


@bp.post("/assessments")
def post_assessment() -> flask.Response:
    return submit(schemas.AssessmentSchema(), assessments.build_assessment, assessments.read_assessment)


@bp.post("/plans")
def post_plan() -> flask.Response:
    return submit(schemas.PlanSchema(), plans.build_plan, plans.read_plan)


@bp.post("/sessions")
def post_session() -> flask.Response:
    performer = sessions.performer_of(_ctx().fhir_user)
    return submit(
        sessions.SessionSchema(),
        lambda payload: sessions.build_session(payload, performer),
        sessions.read_session,
        lambda entries: {"billing": sessions.read_billing(entries)},
    )


@bp.post("/outcomes")
def post_outcome() -> flask.Response:
    return submit(
        outcomes.OutcomeSchema(),
        outcomes.build_outcome,
        outcomes.read_outcome,
        lambda entries: {"score": outcomes.read_score(entries)},
    )


@bp.post("/sensor-series")
def post_sensor_series() -> flask.Response:
    return submit(
        sensors.SensorSeriesSchema(),
        sensors.build_series,
        sensors.read_series,
        lambda entries: {"summaries": sensors.read_summaries(entries)},
    )


@bp.get("/patients/<id_>/progress")
def get_progress(id_: str) -> flask.Response:
    ctx = _ctx()
    check_search_access(ctx, ("Observation",))
    confined = ctx.compartment_patient("Observation", "s")
    if confined is not None and confined != id_:
        raise NotFoundError(f"Patient/{id_} is not known", expression=("patient",))
    _check_patient(id_, NotFoundError)
    found = search_all("Observation", [("subject", f"Patient/{id_}")])
    involved = analytics.involved_side(flask.request.args.get("involved"))
    return _json({"patient": f"Patient/{id_}", **analytics.report(found, involved)})


def search_all(type_: str, criteria: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """Return ("Type/id", resource) of every match the token may see, paged over the SQL matches."""
    ctx, repo = _ctx(), _repo()
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


@bp.get("/catalog")
def get_catalog() -> flask.Response:
    return _json({"measures": [catalog_entry(m) for m in catalog.MEASURES]})


def catalog_entry(m: catalog.Measure) -> dict[str, Any]:
    """Return the public description of one measure."""
    return {
        "measure": m.key,
        "display": m.display,
        "category": m.category,
        "value_type": m.value_type,
        "unit": m.unit,
        "input_units": list(m.input_units),
        "range": [m.low, m.high],
        "grades": [g.code for g in m.grades],
        "laterality": m.laterality,
        "body_site": m.site,
        "method": m.method,
        "mcid": m.mcid,
        "mcid_kind": m.mcid_kind if m.mcid else None,
        "direction": m.direction,
        "status": m.status,
        "codes": [
            {
                "system": c.system,
                "code": c.code,
                "display": c.display,
                "status": c.status,
                "sent": c.sent,
                "source": c.source,
                "side": c.side,
                "protocol": c.protocol,
            }
            for c in m.codes
        ],
        "source": m.source,
        "note": m.note,
    }


def seed_terminology(app: flask.Flask, settings: Settings) -> list[str]:
    """Store our CodeSystems, ValueSets and ConceptMap (missing or changed ones) as the system."""
    from server.store.repository import SqlRepository

    session = app.extensions["rehabfhir.sessions"]()
    try:
        req = FhirRequest(method="PUT", base_url=settings.public_base_url)
        return terminology.seed(SqlRepository(session), SYSTEM, req)
    finally:
        session.close()


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the /rehab blueprint and seed the terminology resources."""
    from server.api import rehab_episodes  # noqa: F401  (adds the episode routes to bp)

    app.register_blueprint(bp)
    try:
        written = seed_terminology(app, settings)
        if written:
            log.info("seeded terminology: %s", ", ".join(written))
    except Exception:  # a server without its tables yet still starts; $lookup/$translate need no seed
        log.warning("could not seed the terminology resources", exc_info=True)
