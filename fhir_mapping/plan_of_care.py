"""The plan of care of an episode: its CarePlan (certification period) and the order for its visits.

- Certification period: `CarePlan.period` (https://hl7.org/fhir/R4B/careplan-definitions.html#CarePlan.period,
  "the period over which the plan is in force"); the date the plan was written moves to
  `CarePlan.created`. `CarePlan.addresses` is the episode's Condition, `CarePlan.author` the
  practitioner. Re-certification writes a new version (its history keeps every period certified).
- The visits (frequency x duration, visits authorized) are a ServiceRequest `basedOn` the CarePlan
  ("plan/proposal/order fulfilled by this request",
  https://hl7.org/fhir/R4B/servicerequest-definitions.html#ServiceRequest.basedOn):
  `occurrenceTiming.repeat` holds `frequency` visits per `period` 1 `periodUnit` wk for
  `boundsDuration` weeks (UCUM `wk`, https://hl7.org/fhir/R4B/datatypes.html#Timing), and
  `quantityQuantity` the visits authorized (ServiceRequest.quantity[x], "an amount of service
  being requested ... for example, 20 half day visits per month"). Standard elements only, no
  extension, and not a CarePlan activity: the exercise-plan profile of CarePlan makes every
  activity an exercise (activity.detail.code fixed to exercise therapy). No code is sent for the
  visits (no verified one): `code.text` only. It is re-certified with its CarePlan, in one
  transaction, so version n of the one goes with version n of the other.
- Visits used are not stored (they would go stale): they are counted from the episode's session
  Encounters (`Encounter.episodeOfCare`) whenever a view is made.
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes

VISITS_TEXT = "Physical therapy visits (plan of care)"


def certify(
    plan: dict[str, Any], cert: dict[str, Any], condition: str | None = None, author: str | None = None
) -> dict[str, Any]:
    """Make a CarePlan the plan of care: certification period, the Condition, the author."""
    plan.setdefault("created", plan["period"]["start"])
    plan["period"] = {"start": cert["start"], "end": cert["end"]}
    if condition:
        plan["addresses"] = [{"reference": condition}]
    if author:
        plan["author"] = {"reference": author}
    return plan


def visits_request(
    cert: dict[str, Any], plan: dict[str, Any], plan_url: str, author: str | None = None
) -> dict[str, Any]:
    """Return the ServiceRequest for the plan of care's visits: frequency x duration, visits authorized."""
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"text": VISITS_TEXT},
        "subject": plan["subject"],
        "basedOn": [{"reference": plan_url}],
        "authoredOn": plan["created"],
    }
    return renew(request, cert, plan, author)


def renew(
    request: dict[str, Any], cert: dict[str, Any], plan: dict[str, Any], author: str | None
) -> dict[str, Any]:
    """Set a visits ServiceRequest's timing and quantity to a certification (and its reason, requester)."""
    request["occurrenceTiming"] = {
        "repeat": {
            "boundsDuration": codes.quantity(cert["weeks"], "wk"),
            "frequency": cert["visits_per_week"],
            "period": 1,
            "periodUnit": "wk",
        }
    }
    request["quantityQuantity"] = {"value": cert["visits_authorized"], "unit": "visits"}
    if plan.get("addresses"):
        request["reasonReference"] = plan["addresses"]
    if author:
        request["requester"] = {"reference": author}
    return request


def is_visits(request: dict[str, Any]) -> bool:
    """Whether a ServiceRequest is a plan of care's visits."""
    return (request.get("code") or {}).get("text") == VISITS_TEXT and "occurrenceTiming" in request


def read_certification(plan: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Return the certification a plan of care and its visits hold (inverse of certify + visits_request)."""
    repeat = request["occurrenceTiming"]["repeat"]
    return {
        "start": plan["period"]["start"],
        "end": plan["period"]["end"],
        "visits_per_week": repeat["frequency"],
        "weeks": codes.number(repeat["boundsDuration"]["value"]),
        "visits_authorized": int(request["quantityQuantity"]["value"]),
    }


def _in_force(certs: list[dict[str, Any]], day: str) -> dict[str, Any] | None:
    """The latest certification whose period holds the day (a re-certification wins over the one before)."""
    for cert in reversed(certs):
        if cert["start"] <= day <= cert["end"]:
            return cert
    return None


def visit_warnings(certs: list[dict[str, Any]], visits: list[str]) -> list[list[str]]:
    """Return each visit's warnings (visits as dateTimes, in order; certs oldest version first).

    A visit outside every certified period, or beyond the visits authorized in the period that
    holds it, is accepted (the clinic decides) and warned about.
    """
    counted: dict[int, int] = {}
    out: list[list[str]] = []
    for when in visits:
        day = when[:10]
        cert = _in_force(certs, day)
        if cert is None:
            periods = ", ".join(f"{c['start']} to {c['end']}" for c in certs)
            out.append([f"{day} is outside the certified period ({periods})"])
            continue
        n = counted[id(cert)] = counted.get(id(cert), 0) + 1
        authorized = cert["visits_authorized"]
        period = f"{cert['start']} to {cert['end']}"
        out.append([f"visit {n} of {authorized} authorized for {period}"] if n > authorized else [])
    return out


def summary(
    refs: tuple[str, str], version: int, certs: list[dict[str, Any]], visits: list[str]
) -> dict[str, Any]:
    """Return the episode view's plan of care: the current certification and the visits used in it."""
    current = certs[-1]
    used = sum(1 for when in visits if _in_force(certs, when[:10]) is current)
    return {
        "careplan": refs[0],
        "request": refs[1],
        "version": version,
        **current,
        "visits_used": used,
        "visits_left": max(current["visits_authorized"] - used, 0),
        "certifications": len({(c["start"], c["end"]) for c in certs}),
    }
