"""Home program adherence (issue 17, item 4): POST /rehab/adherence stores one activity Observation per
exercise and day (a patient token may), refuses exercises not in the plan, and progress shows adherence %
per exercise and plan week. Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

from fhir_mapping import adherence
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.conftest import running_server
from tests.functional.auth_flows import PASSWORD
from tests.functional.auth_flows import REDIRECT
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import hidden
from tests.functional.auth_flows import query_of
from tests.functional.test_episode import count
from tests.functional.test_episode import patient
from tests.functional.test_episode import patient_token
from tests.functional.test_episode import post

pytestmark = pytest.mark.pg
PROGRAM = {
    "date": "2026-11-16",
    "exercises": [
        {
            "exercise": "Bridges",
            "sets": 3,
            "reps": 10,
            "frequency": {"times": 1, "period": 1, "period_unit": "d"},
        },
        {"exercise": "Step-ups", "frequency": {"times": 3, "period": 1, "period_unit": "wk"}},
    ],
}
PATIENT_SCOPE = (
    "launch/patient openid fhirUser patient/Patient.rs patient/CarePlan.rs patient/Observation.crs"
)


def program(fhir: FhirClient, pid: str) -> str:
    r = post(fhir, "/rehab/plans", {"patient": pid, **PROGRAM})
    assert r.status_code == 201, r.get_data(as_text=True)
    return str(r.get_json()["references"]["careplan"][0])


def day(fhir: FhirClient, pid: str, date: str, *done: dict[str, Any], **more: Any) -> Any:
    return post(fhir, "/rehab/adherence", {"patient": pid, "date": date, "exercises": list(done), **more})


def test_a_patient_app_records_its_day(app: Any, fhir: FhirClient) -> None:
    pid = patient(fhir)
    plan = program(fhir, pid)
    mine = FhirClient(app.test_client(), patient_token(app, pid, PATIENT_SCOPE))
    done = {"exercise": "Bridges", "status": "partly", "sets": 2, "reps": 10, "pain": 3}
    r = day(mine, pid, "2026-11-17", done, {"exercise": "Step-ups", "status": "not-done"})
    assert r.status_code == 201, r.get_data(as_text=True)
    view = r.get_json()
    assert view["plan"] == plan.split("/")[1] and view["exercises"][0] == done
    obs = fhir.call("GET", "/" + view["references"]["adherence"][0]).get_json()
    assert obs["category"][0]["coding"][0]["code"] == "activity"
    assert obs["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "73985-4", "display": "Exercise activity"}
    ]
    assert obs["valueCodeableConcept"] == {"text": "Bridges"} and obs["basedOn"] == [{"reference": plan}]
    assert obs["performer"] == [{"reference": f"Patient/{pid}"}] and adherence.is_adherence(obs)
    # The same patient token may not write for another patient, nor without Observation create.
    other = patient(fhir)
    program(fhir, other)
    r = day(mine, other, "2026-11-17", done)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["patient"]
    reader = FhirClient(
        app.test_client(), client_credentials_token(app, "system/Patient.rs system/CarePlan.rs")
    )
    assert day(reader, pid, "2026-11-17", done).status_code == 403
    assert count(fhir, "Observation") == 2


def http_patient_token(base: str, app: Any, pid: str, scope: str) -> str:
    """A patient app's token from the running server: sign-in, consent and PKCE code exchange over HTTP."""
    name = f"pat-{secrets.token_hex(4)}"
    add_user(app, name, "patient", f"Patient/{pid}")
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    browser = requests.Session()
    ask = {**authorize_params(client_id, scope, verifier), "aud": base}
    page = browser.get(f"{base}/auth/authorize", params=ask, timeout=30).text
    form = {"step": "login", "csrf_token": hidden(page, "csrf_token"), "username": name, "password": PASSWORD}
    page = browser.post(f"{base}/auth/authorize", data=form, timeout=30).text
    form = {"step": "consent", "csrf_token": hidden(page, "csrf_token"), "decision": "approve"}
    r = browser.post(f"{base}/auth/authorize", data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    grant = {
        "grant_type": "authorization_code",
        "code": query_of(r.headers["Location"])["code"],
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    r = requests.post(f"{base}/auth/token", data=grant, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_a_patient_app_posts_its_day_over_http(app: Any, fhir: FhirClient, database_url: str) -> None:
    """A real server (gunicorn) and a token got by the app launch over HTTP, with only the grants the route
    needs (patient/Observation.c, patient/CarePlan.rs): its own day is stored; another patient's id is
    refused as an unknown one (400 naming patient, not "no active plan", which would tell it exists)."""
    pid, other = patient(fhir), patient(fhir)
    plan = program(fhir, pid)
    theirs = program(fhir, other).split("/")[1]
    done = {"exercise": "Bridges", "status": "partly", "sets": 2, "reps": 8, "pain": 4}
    with running_server(database_url, workers=1) as base:
        scope = "launch/patient openid fhirUser patient/Observation.c patient/CarePlan.rs"
        token = http_patient_token(base, app, pid, scope)

        def send(body: dict[str, Any], bearer: str = token) -> requests.Response:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            return requests.post(f"{base}/rehab/adherence", json=body, headers=headers, timeout=30)

        r = send({"patient": pid, "date": "2026-11-17", "exercises": [done]})
        assert r.status_code == 201, r.text
        assert r.json()["plan"] == plan.split("/")[1] and r.json()["exercises"] == [done]
        for body in ({"patient": other}, {"patient": other, "plan": theirs}, {"patient": "nobody"}):
            r = send({**body, "date": "2026-11-17", "exercises": [done]})
            assert r.status_code == 400, r.text
            (problem,) = r.json()["issue"]
            assert problem["expression"] == ["patient"]
            assert problem["diagnostics"] == f"Patient/{body['patient']} does not exist"
        r = send({"patient": pid, "plan": theirs, "date": "2026-11-17", "exercises": [done]})
        assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["plan"]
        # Tokens that must be refused: none (401), and one of the patient's that may not write Observations.
        assert send({"patient": pid, "date": "2026-11-18", "exercises": [done]}, "").status_code == 401
        reader = http_patient_token(
            base, app, pid, "launch/patient openid patient/CarePlan.rs patient/Observation.rs"
        )
        r = send({"patient": pid, "date": "2026-11-18", "exercises": [done]}, reader)
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    (stored,) = [e["resource"] for e in fhir.call("GET", "/Observation").get_json()["entry"]]
    assert adherence.read_done(stored) == done and stored["subject"] == {"reference": f"Patient/{pid}"}
    assert stored["performer"] == [{"reference": f"Patient/{pid}"}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"exercises": [{"exercise": "Squats", "status": "done"}]}, "exercises[0].exercise"),
        ({"exercises": [{"exercise": "Bridges", "status": "mostly"}]}, "exercises[0].status"),
        ({"exercises": [{"exercise": "Bridges", "status": "done", "pain": 11}]}, "exercises[0].pain"),
        ({"date": "2027-06-01"}, "date"),
        ({"plan": "nope"}, "plan"),
    ],
    ids=["not-in-plan", "status", "pain", "future", "unknown-plan"],
)
def test_bad_adherence_is_400_and_stores_nothing(
    fhir: FhirClient, change: dict[str, Any], field: str
) -> None:
    pid = patient(fhir)
    program(fhir, pid)
    body = {
        "patient": pid,
        "date": "2026-11-17",
        "exercises": [{"exercise": "Bridges", "status": "done"}],
        **change,
    }
    r = post(fhir, "/rehab/adherence", body)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.get_json()["issue"][0]["expression"]
    assert count(fhir, "Observation") == 0


def test_no_plan_or_another_patients_plan_is_400(fhir: FhirClient) -> None:
    pid, other = patient(fhir), patient(fhir)
    r = day(fhir, pid, "2026-11-17", {"exercise": "Bridges", "status": "done"})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["plan"]
    theirs = program(fhir, other)
    r = day(fhir, pid, "2026-11-17", {"exercise": "Bridges", "status": "done"}, plan=theirs)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["plan"]


def test_progress_shows_adherence_per_exercise_and_week(fhir: FhirClient) -> None:
    pid = patient(fhir)
    plan = program(fhir, pid)
    # Week 1 (Nov 16-22): Bridges done 5 days, partly 1 (5.5 of 7); Step-ups done twice (2 of 3).
    for date in ("2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"):
        day(fhir, pid, date, {"exercise": "Bridges", "status": "done"})
    day(fhir, pid, "2026-11-21", {"exercise": "Bridges", "status": "partly"})
    for date in ("2026-11-17", "2026-11-19"):
        day(fhir, pid, date, {"exercise": "Step-ups", "status": "done"})
    # Week 2 (Nov 23-29): Bridges not done once, then corrected to done the same day (the latest wins).
    day(fhir, pid, "2026-11-23", {"exercise": "Bridges", "status": "not-done"})
    day(fhir, pid, "2026-11-23", {"exercise": "Bridges", "status": "done"})
    progress = fhir.call("GET", f"/rehab/patients/{pid}/progress").get_json()
    (report,) = progress["adherence"]
    assert report["plan"] == plan
    bridges, steps = report["exercises"]
    assert bridges["expected_per_week"] == 7 and bridges["days_recorded"] == 7
    assert [(w["week"], w["start"], w["credited"], w["percent"]) for w in bridges["weeks"]] == [
        (1, "2026-11-16", 5.5, 78.6),
        (2, "2026-11-23", 1, 14.3),
    ]
    assert bridges["percent"] == 46.4  # 6.5 of 14
    assert steps["percent"] == 66.7 and [w["week"] for w in steps["weeks"]] == [1]
    # Adherence Observations are not progress measures.
    assert progress["measures"] == [] and progress["excluded"] == []


def test_an_exercise_observation_off_our_shape_is_left_out(fhir: FhirClient) -> None:
    """Any client with Observation.c may write an exercise activity on the plan: progress leaves out
    one it cannot read (no component coding, a period for a day, no status) instead of failing."""
    pid = patient(fhir)
    plan = program(fhir, pid)
    assert day(fhir, pid, "2026-11-17", {"exercise": "Bridges", "status": "done"}).status_code == 201
    status = {"code": {"coding": [{"system": adherence.HOME_PROGRAM, "code": "adherence"}]}}
    foreign = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [adherence.EXERCISE_ACTIVITY]},
        "subject": {"reference": f"Patient/{pid}"},
        "basedOn": [{"reference": plan}],
        "valueCodeableConcept": {"text": "Bridges"},
    }
    for odd in (
        {"effectiveDateTime": "2026-11-18", "component": [{"code": {"text": "steps"}, "valueInteger": 3}]},
        {"effectivePeriod": {"start": "2026-11-18"}, "component": [{**status, "valueString": "done"}]},
        {"effectiveDateTime": "2026-11", "component": [{**status, "valueString": "done"}]},
    ):
        r = fhir.call("POST", "/Observation", {**foreign, **odd})
        assert r.status_code == 201, r.get_data(as_text=True)
    r = fhir.call("GET", f"/rehab/patients/{pid}/progress")
    assert r.status_code == 200, r.get_data(as_text=True)
    (report,) = r.get_json()["adherence"]
    assert [(e["exercise"], e["days_recorded"]) for e in report["exercises"]] == [
        ("Bridges", 1),
        ("Step-ups", 0),
    ]


def test_a_plan_repeating_every_0_days_expects_no_days(fhir: FhirClient) -> None:
    """A CarePlan written through FHIR may say `period: 0`: progress answers (no expected days), not 500."""
    pid = patient(fhir)
    timing = {"repeat": {"frequency": 1, "period": 0, "periodUnit": "d"}}
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "activity": [
            {"detail": {"status": "in-progress", "code": {"text": "Walk"}, "scheduledTiming": timing}}
        ],
    }
    assert fhir.call("POST", "/CarePlan", plan).status_code == 201
    r = fhir.call("GET", f"/rehab/patients/{pid}/progress")
    assert r.status_code == 200, r.get_data(as_text=True)
    (report,) = r.get_json()["adherence"]
    assert [(e["exercise"], e["expected_per_week"]) for e in report["exercises"]] == [("Walk", None)]


def test_the_definitions_an_adherence_observation_uses_resolve(app: Any, fhir: FhirClient) -> None:
    """Its component codes' CodeSystem and the episode link's extension are served by their canonical URL."""
    from fhir_mapping import episodes
    from server.api.rehab_routes import seed_terminology

    seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    found = fhir.call("GET", f"/CodeSystem?url={adherence.HOME_PROGRAM}").get_json()
    (system,) = [e["resource"] for e in found["entry"]]
    assert {c["code"] for c in system["concept"]} == {
        "adherence",
        "sets-done",
        "repetitions-done",
        "done",
        "partly",
        "not-done",
    }
    r = fhir.call("GET", f"/CodeSystem/$lookup?system={adherence.HOME_PROGRAM}&code=not-done")
    assert r.status_code == 200, r.get_data(as_text=True)
    found = fhir.call("GET", f"/StructureDefinition?url={episodes.EXT_EPISODE}").get_json()
    (sd,) = [e["resource"] for e in found["entry"]]
    assert sd["version"] == "4.3.0" and {"type": "element", "expression": "CarePlan"} in sd["context"]
