"""/rehab/adherence on the "rehab" blueprint: the patient's home program, done or not, day by day.

Usable by a patient app: a patient token with patient/Observation.c and patient/CarePlan.rs
records its own days; another patient "does not exist" (400 naming `patient`, with or without
patient/Patient.r: the same answer as for an unknown id). The plan is the one given (`plan`) or
the patient's latest active CarePlan with exercises; an exercise the plan does not hold is a 400 naming
`exercises[i].exercise`, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import flask

from fhir_mapping import adherence
from server.api.rehab_support import bp
from server.api.rehab_support import check_exists
from server.api.rehab_support import current_ctx
from server.api.rehab_support import search_all
from server.api.rehab_support import submit
from server.audit.flask_integration import name_patient
from server.errors import InvalidRequestError


def _active_plans(patient: str) -> list[tuple[str, dict[str, Any]]]:
    """The patient's active CarePlans with exercises, latest first."""
    found = [
        (ref, plan)
        for ref, plan in search_all("CarePlan", [("subject", f"Patient/{patient}")])
        if plan["status"] == "active" and adherence.plan_exercises(plan)
    ]
    return sorted(found, key=lambda kv: str((kv[1].get("period") or {}).get("start") or ""), reverse=True)


def _plan(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    patient = payload["patient"]
    if payload.get("plan"):
        plan = check_exists("CarePlan", payload["plan"], "plan")
        if plan["subject"].get("reference") != f"Patient/{patient}" or plan["status"] != "active":
            raise InvalidRequestError(
                f"CarePlan/{payload['plan']} is not an active plan of Patient/{patient}", expression=("plan",)
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
    """Adherence % per exercise and week of each active plan (none without a CarePlan search grant)."""
    if not current_ctx().can("CarePlan", "s"):
        return []
    found = [obs for _, obs in observations]
    return [adherence.report(ref, plan, found) for ref, plan in _active_plans(patient)]
