"""/rehab/adherence on the "rehab" blueprint: the patient's home program, done or not, day by day.

Usable by a patient app: a patient token with patient/Observation.c and patient/CarePlan.rs
records its own days; another patient "does not exist" (400 naming `patient`, with or without
patient/Patient.r: the same answer as for an unknown id). The plan is the one given (`plan`) or
the patient's latest active CarePlan with exercises; a plan no longer active, or of a finished
episode, is a 400 naming `plan`; an exercise the plan does not hold is a 400 naming
`exercises[i].exercise`; and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import flask
import orjson

from fhir_mapping import adherence
from fhir_mapping import episodes
from server.api.rehab_support import bp
from server.api.rehab_support import check_exists
from server.api.rehab_support import current_ctx
from server.api.rehab_support import current_repo
from server.api.rehab_support import search_all
from server.api.rehab_support import submit
from server.audit.flask_integration import name_patient
from server.errors import InvalidRequestError


def _plans(patient: str, statuses: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """The patient's CarePlans with exercises in one of `statuses`, latest first."""
    found = [
        (ref, plan)
        for ref, plan in search_all("CarePlan", [("subject", f"Patient/{patient}")])
        if plan["status"] in statuses and adherence.plan_exercises(plan)
    ]
    return sorted(found, key=lambda kv: str((kv[1].get("period") or {}).get("start") or ""), reverse=True)


def _finished_episode(plan: dict[str, Any]) -> str | None:
    """The finished EpisodeOfCare a plan belongs to, if it does (its status is the server's to check,
    whether or not the token may read episodes: a patient app's may not)."""
    episode = episodes.episode_of(plan)
    stored = current_repo().read_resource("EpisodeOfCare", episode) if episode else None
    if stored is None or stored.deleted or orjson.loads(stored.body).get("status") not in episodes.CLOSED:
        return None
    return f"EpisodeOfCare/{episode}"


def _active_plans(patient: str) -> list[tuple[str, dict[str, Any]]]:
    """The plans a patient's day may be recorded against: active, of no finished episode, latest first."""
    return [(ref, plan) for ref, plan in _plans(patient, ("active",)) if _finished_episode(plan) is None]


def _plan(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    patient = payload["patient"]
    if payload.get("plan"):
        plan = check_exists("CarePlan", payload["plan"], "plan")
        if plan["subject"].get("reference") != f"Patient/{patient}" or plan["status"] != "active":
            raise InvalidRequestError(
                f"CarePlan/{payload['plan']} is not an active plan of Patient/{patient}", expression=("plan",)
            )
        finished = _finished_episode(plan)
        if finished is not None:
            raise InvalidRequestError(
                f"CarePlan/{payload['plan']} is the plan of {finished}, which is finished",
                expression=("plan",),
            )
        return f"CarePlan/{payload['plan']}", plan
    plans = _active_plans(patient)
    if not plans:
        raise InvalidRequestError(
            f"Patient/{patient} has no active plan with exercises", expression=("plan",)
        )
    return plans[0]


@bp.post("/adherence")
def post_adherence() -> flask.Response:
    chosen: dict[str, str] = {}

    def check(payload: dict[str, Any]) -> None:
        own = current_ctx().compartment_patient("Observation", "c")
        if own is not None and own != payload["patient"]:
            # A patient app's token that may not read Patients passed check_patient: another patient
            # does not exist for it either (else "no active plan" would tell that one exists).
            raise InvalidRequestError(f"Patient/{payload['patient']} does not exist", expression=("patient",))
        name_patient(f"Patient/{payload['patient']}")
        ref, plan = _plan(payload)
        missing = adherence.not_in_plan(payload, plan)
        if missing:
            names = ", ".join(repr(payload["exercises"][i]["exercise"]) for i in missing)
            raise InvalidRequestError(
                f"{ref} has no exercise {names}", expression=[f"exercises[{i}].exercise" for i in missing]
            )
        chosen["plan"] = ref

    return submit(
        adherence.AdherenceSchema(),
        lambda payload: adherence.build_adherence(payload, chosen["plan"], f"Patient/{payload['patient']}"),
        adherence.read_adherence,
        check=check,
    )


def progress_adherence(patient: str, observations: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Adherence % per exercise and week of each active plan, and of each completed plan with days
    recorded (a discharged episode's home program keeps its record); none without CarePlan search."""
    if not current_ctx().can("CarePlan", "s"):
        return []
    found = [obs for _, obs in observations]
    reports = [
        (plan["status"], adherence.report(ref, plan, found))
        for ref, plan in _plans(patient, ("active", "completed"))
    ]
    return [
        report
        for status, report in reports
        if status == "active" or any(e["days_recorded"] for e in report["exercises"])
    ]
