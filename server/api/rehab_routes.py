"""Blueprint "rehab": clinic payloads in, one FHIR transaction each, the clinic view and references out.

Every POST validates with the fhir_mapping schema (400 naming the field, nothing stored),
builds one transaction Bundle and runs it through the FHIR transaction interaction, so it is
atomic and passes the same scope checks and auditing as POST / of a Bundle. Progress reads
Observations through the repository search, confined to what the token may see.
"""

from __future__ import annotations

import logging
from typing import Any

import flask

from fhir_mapping import analytics
from fhir_mapping import assessments
from fhir_mapping import catalog
from fhir_mapping import measures_csv
from fhir_mapping import outcomes
from fhir_mapping import plans
from fhir_mapping import questionnaires
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from server.api import episode_care
from server.api import rehab_adherence
from server.api import rehab_discharge
from server.api import rehab_episodes
from server.api import rehab_goals
from server.api.rehab_support import bp
from server.api.rehab_support import check_patient
from server.api.rehab_support import current_ctx
from server.api.rehab_support import json_response
from server.api.rehab_support import search_all
from server.api.rehab_support import submit
from server.errors import NotFoundError
from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.interactions.search_type import check_search_access
from server.fhir.operations import terminology
from server.settings import Settings

log = logging.getLogger("rehabfhir.rehab")


@bp.post("/assessments")
def post_assessment() -> flask.Response:
    return submit(
        schemas.AssessmentSchema(),
        assessments.build_assessment,
        assessments.read_assessment,
        track=rehab_goals.track,
    )


@bp.post("/plans")
def post_plan() -> flask.Response:
    certified: dict[str, Any] = {}
    performer = sessions.performer_of(current_ctx().fhir_user)
    return submit(
        schemas.PlanSchema(),
        lambda payload: episode_care.build_plan(payload, certified, performer),
        plans.read_plan,
        check=lambda payload: episode_care.check_plan(payload, certified),
    )


@bp.post("/sessions")
def post_session() -> flask.Response:
    performer = sessions.performer_of(current_ctx().fhir_user)
    return submit(
        sessions.SessionSchema(),
        lambda payload: sessions.build_session(payload, performer),
        sessions.read_session,
        lambda entries: {"billing": sessions.read_billing(entries)},
        check=episode_care.session_warnings,
        track=rehab_goals.track,
    )


@bp.post("/outcomes")
def post_outcome() -> flask.Response:
    return submit(
        outcomes.OutcomeSchema(),
        outcomes.build_outcome,
        outcomes.read_outcome,
        lambda entries: {"score": outcomes.read_score(entries)},
        track=rehab_goals.track,
    )


@bp.post("/sensor-series")
def post_sensor_series() -> flask.Response:
    return submit(
        sensors.SensorSeriesSchema(),
        sensors.build_series,
        sensors.read_series,
        lambda entries: {"summaries": sensors.read_summaries(entries)},
    )


def patient_observations(id_: str) -> list[tuple[str, dict[str, Any]]]:
    """Every Observation of a patient the token may see (403 without Observation search, 404 hidden)."""
    ctx = current_ctx()
    check_search_access(ctx, ("Observation",))
    confined = ctx.compartment_patient("Observation", "s")
    if confined is not None and confined != id_:
        raise NotFoundError(f"Patient/{id_} is not known", expression=("patient",))
    check_patient(id_, NotFoundError)
    return search_all("Observation", [("subject", f"Patient/{id_}")])


@bp.get("/patients/<id_>/progress")
def get_progress(id_: str) -> flask.Response:
    found = patient_observations(id_)
    involved = analytics.involved_side(flask.request.args.get("involved"))
    report = analytics.report(found, involved)
    report["goals"] = rehab_goals.progress_goals(id_, report["measures"])
    report["adherence"] = rehab_adherence.progress_adherence(id_, found)
    return json_response({"patient": f"Patient/{id_}", **report})


@bp.get("/patients/<id_>/measures.csv")
def get_measures_csv(id_: str) -> flask.Response:
    text = measures_csv.to_csv(analytics.report(patient_observations(id_)))
    return flask.Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="measures-{id_}.csv"'},
    )


@bp.get("/catalog")
def get_catalog() -> flask.Response:
    return json_response({"measures": [catalog_entry(m) for m in catalog.MEASURES]})


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
    """Store our CodeSystems, ValueSets, ConceptMap and instrument Questionnaires (missing or changed)."""
    from server.store.repository import SqlRepository

    session = app.extensions["rehabfhir.sessions"]()
    try:
        req = FhirRequest(method="PUT", base_url=settings.public_base_url)
        repo = SqlRepository(session)
        return terminology.seed(repo, SYSTEM, req) + terminology.store_missing(
            repo, SYSTEM, req, questionnaires.resources()
        )
    finally:
        session.close()


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the /rehab blueprint and seed the terminology resources."""
    # The episode, goal, adherence and discharge routes are on this blueprint, registered here.
    assert rehab_episodes.bp is rehab_goals.bp is rehab_adherence.bp is rehab_discharge.bp is bp
    app.register_blueprint(bp)
    try:
        written = seed_terminology(app, settings)
        if written:
            log.info("seeded terminology: %s", ", ".join(written))
    except Exception:  # a server without its tables yet still starts; $lookup/$translate need no seed
        log.warning("could not seed the terminology resources", exc_info=True)
