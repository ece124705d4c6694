"""Seed data for the page tests, written in-process through the FHIR transaction interaction."""

from __future__ import annotations

from typing import Any

from fhir_mapping.codes import EXT_SESSION_TIMING
from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.interactions.bundle import process_bundle
from server.store.repository import SqlRepository
from server.store.session import make_engine
from server.store.session import make_session_factory

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PT = "https://rehabfhir.org/fhir/CodeSystem/pt-measures"
XSS_NAME = "<script>alert(1)</script>"
DATES = ("2026-01-05", "2026-01-19", "2026-02-02", "2026-02-16")
GRIP_LEFT = (18.0, 21.5, 24.0, 27.5)
GRIP_RIGHT = (30.0, 31.0, 31.5, 32.0)
TUG = (16.4, 14.2, 12.9, 11.1)
# Written but not counted by progress (listed under `excluded`): a preliminary TUG and a pain of 42
# on the 0-10 scale.
TUG_PRELIMINARY = ("2026-02-23", 9.8)
PAIN_OUT_OF_RANGE = ("2026-02-20T10:00:00Z", 42)


def _obs(
    pid: str,
    oid: str,
    code: str,
    display: str,
    date: str,
    value: float,
    unit: str,
    ucum: str,
    category: str = "exam",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def resources() -> list[dict[str, Any]]:
    """Patients, a grip-strength (sided) and TUG series, a goal, a program and a session."""
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "ada",
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1961-12-10",
            "identifier": [{"system": "urn:clinic", "value": "MRN-1"}],
        },
        {
            "resourceType": "Patient",
            "id": "xss",
            "name": [{"family": XSS_NAME, "given": ["Mallory"]}],
            "gender": "other",
            "birthDate": "1990-01-01",
        },
        {
            "resourceType": "Patient",
            "id": "empty",
            "name": [{"family": "Newcomer", "given": ["Nora"]}],
            "gender": "female",
            "birthDate": "1984-03-03",
        },
        {"resourceType": "Practitioner", "id": "pt1", "name": [{"family": "Hopper", "given": ["Grace"]}]},
    ]
    for i, date in enumerate(DATES):
        out.append(
            _obs(
                "ada",
                f"grip-l-{i}",
                "83173-5",
                "Grip strength Hand - left Dynamometer",
                date,
                GRIP_LEFT[i],
                "kg",
                "kg",
            )
        )
        out.append(
            _obs(
                "ada",
                f"grip-r-{i}",
                "83174-3",
                "Grip strength Hand - right Dynamometer",
                date,
                GRIP_RIGHT[i],
                "kg",
                "kg",
            )
        )
        out.append(_obs("ada", f"tug-{i}", "89423-8", "Timed Up and Go", date, TUG[i], "s", "s"))
    out.append(
        {
            "resourceType": "Goal",
            "id": "goal-tug",
            "lifecycleStatus": "active",
            "description": {"text": "Timed Up and Go under 10 seconds"},
            "subject": {"reference": "Patient/ada"},
            # as POST /rehab/plans writes it: the standard code, then ours (the catalog key)
            "target": [
                {
                    "measure": {
                        "coding": [{"system": LOINC, "code": "89423-8"}, {"system": PT, "code": "tug_time"}]
                    },
                    "detailQuantity": {"value": 10, "unit": "s", "system": UCUM, "code": "s"},
                    "dueDate": "2026-04-01",
                }
            ],
        }
    )
    out.append(
        {
            "resourceType": "CarePlan",
            "id": "plan-1",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/ada"},
            "goal": [{"reference": "Goal/goal-tug"}],
            "activity": [
                {
                    "detail": {
                        "status": "in-progress",
                        "code": {"text": "Bridges"},
                        "description": "Hold at the top, slow lowering",
                        "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                        "quantity": {"value": 10, "unit": "repetitions"},
                    }
                }
            ],
        }
    )
    out.append(
        {
            "resourceType": "Encounter",
            "id": "visit-1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/ada"},
            "period": {"start": "2026-02-16T09:00:00Z", "end": "2026-02-16T09:45:00Z"},
        }
    )
    pains = (
        ("pain-before", "2026-02-16T09:00:00Z", 6, "pre-treatment"),
        ("pain-after", "2026-02-16T09:45:00Z", 3, "post-treatment"),
    )
    for oid, when, value, timing in pains:
        pain = _obs(
            "ada",
            oid,
            "72514-3",
            "Pain severity 0-10 [Score] - Reported",
            when,
            value,
            "{score}",
            "{score}",
            category="survey",
        )
        pain["encounter"] = {"reference": "Encounter/visit-1"}
        # as POST /rehab/sessions writes them: before and after treatment, a within-session pair
        pain["extension"] = [{"url": EXT_SESSION_TIMING, "valueCode": timing}]
        out.append(pain)
    when, value = PAIN_OUT_OF_RANGE
    out.append(
        _obs(
            "ada",
            "pain-typo",
            "72514-3",
            "Pain severity 0-10 [Score] - Reported",
            when,
            value,
            "{score}",
            "{score}",
            category="survey",
        )
    )
    when, value = TUG_PRELIMINARY
    tug = _obs("ada", "tug-prelim", "89423-8", "Timed Up and Go", when, value, "s", "s")
    tug["status"] = "preliminary"
    out.append(tug)
    out.append(
        {
            "resourceType": "Procedure",
            "id": "proc-1",
            "status": "completed",
            "code": {
                "coding": [
                    {
                        "system": "http://www.ama-assn.org/go/cpt",
                        "code": "97112",
                        "display": "Neuromuscular reeducation",
                    }
                ]
            },
            "subject": {"reference": "Patient/ada"},
            "encounter": {"reference": "Encounter/visit-1"},
        }
    )
    return out


def seed(database_url: str, base_url: str) -> None:
    """Store every seed resource in one transaction bundle (bypassing HTTP, so no token is needed)."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources()
        ],
    }
    engine = make_engine(database_url)
    session = make_session_factory(engine)()
    try:
        resp = process_bundle(SqlRepository(session), SYSTEM, FhirRequest("POST", base_url, body=bundle))
        assert resp.status == 200, resp.body
        session.commit()
    finally:
        session.close()
        engine.dispose()
