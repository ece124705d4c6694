"""The plan of care of an episode (issue 17, item 2): certification period, visits frequency x duration,
visits authorized and used (counted from the episode's session Encounters), re-certification as a new
CarePlan version, sessions beyond the authorization or outside the period accepted with a warning.
Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mapping import plan_of_care
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.test_episode import count
from tests.functional.test_episode import open_episode
from tests.functional.test_episode import patient
from tests.functional.test_episode import post
from tests.functional.test_episode import practitioner
from tests.functional.test_rehab import PLAN
from tests.functional.test_rehab import SESSION

pytestmark = pytest.mark.pg
CERT = {"start": "2026-11-20", "end": "2026-12-31", "visits_per_week": 2, "weeks": 6, "visits_authorized": 2}


def plan_of_care_for(fhir: FhirClient, pid: str, eid: str, **more: Any) -> dict[str, Any]:
    r = post(fhir, "/rehab/plans", {"patient": pid, "episode": eid, **PLAN, "certification": CERT, **more})
    assert r.status_code == 201, r.get_data(as_text=True)
    return dict(r.get_json())


def session(fhir: FhirClient, pid: str, eid: str, date: str) -> Any:
    r = post(fhir, "/rehab/sessions", {"patient": pid, "episode": eid, **SESSION, "date": date})
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def test_certified_plan_is_the_plan_of_care(fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    author = practitioner(fhir, "pt1")
    view = plan_of_care_for(fhir, pid, eid, author=author)
    assert view["certification"] == CERT and view["author"] == "pt1" and view["date"] == PLAN["date"]
    assert len(view["exercises"]) == 1  # the visits are not an exercise
    plan = fhir.call("GET", "/" + view["references"]["careplan"][0]).get_json()
    episode = fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()
    assert plan["period"] == {"start": "2026-11-20", "end": "2026-12-31"} and plan["created"] == "2026-11-20"
    assert plan["addresses"] == [episode["diagnosis"][0]["condition"]]
    assert plan["author"] == {"reference": "Practitioner/pt1"}
    (ref,) = view["references"]["visits"]
    visits = fhir.call("GET", f"/{ref}").get_json()
    assert plan_of_care.is_visits(visits) and visits["basedOn"] == [
        {"reference": view["references"]["careplan"][0]}
    ]
    assert visits["occurrenceTiming"]["repeat"] == {
        "boundsDuration": {"value": 6, "unit": "wk", "system": "http://unitsofmeasure.org", "code": "wk"},
        "frequency": 2,
        "period": 1,
        "periodUnit": "wk",
    }
    assert visits["quantityQuantity"] == {"value": 2, "unit": "visits"}
    assert visits["reasonReference"] == plan["addresses"] and visits["requester"] == plan["author"]
    found = fhir.call("GET", f"/ServiceRequest?based-on={view['references']['careplan'][0]}").get_json()
    assert len(found["entry"]) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"episode": None}, "episode"),
        ({"certification": {**CERT, "end": "2026-11-01"}}, "certification.end"),
        ({"certification": {**CERT, "visits_per_week": 0}}, "certification.visits_per_week"),
        ({"certification": {k: v for k, v in CERT.items() if k != "visits_authorized"}}, "certification"),
        ({"author": "nobody"}, "author"),
    ],
    ids=["no-episode", "period", "frequency", "authorized-missing", "author"],
)
def test_bad_plan_of_care_is_400_and_stores_nothing(
    fhir: FhirClient, change: dict[str, Any], field: str
) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    body = {"patient": pid, "episode": eid, **PLAN, "certification": CERT, **change}
    r = post(fhir, "/rehab/plans", {k: v for k, v in body.items() if v is not None})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert any(e.startswith(field) for e in r.get_json()["issue"][0]["expression"]), r.get_json()
    for type_ in ("CarePlan", "Goal", "ServiceRequest"):
        assert count(fhir, type_) == 0


def test_one_plan_of_care_per_episode(fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    first = plan_of_care_for(fhir, pid, eid)["references"]["careplan"][0]
    r = post(fhir, "/rehab/plans", {"patient": pid, "episode": eid, **PLAN, "certification": CERT})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["certification"]
    assert (
        first in r.get_json()["issue"][0]["diagnostics"]
        and "recertification" in r.get_json()["issue"][0]["diagnostics"]
    )
    # A plain home-program plan in the same episode is fine.
    assert post(fhir, "/rehab/plans", {"patient": pid, "episode": eid, **PLAN}).status_code == 201


def test_sessions_over_the_authorization_or_outside_the_period_are_warned(fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    # Before a plan of care: nothing to warn about.
    assert session(fhir, pid, eid, "2026-11-10T09:00:00Z")["warnings"] == []
    plan_of_care_for(fhir, pid, eid)
    assert session(fhir, pid, eid, "2026-11-21T09:00:00Z")["warnings"] == []
    assert session(fhir, pid, eid, "2026-11-23T09:00:00Z")["warnings"] == []
    third = session(fhir, pid, eid, "2026-11-25T09:00:00Z")
    assert third["warnings"] == ["visit 3 of 2 authorized for 2026-11-20 to 2026-12-31"]
    view = fhir.call("GET", f"/rehab/episodes/{eid}").get_json()
    assert view["visits_used"] == 4
    poc = view["plan_of_care"]
    assert (poc["version"], poc["visits_authorized"], poc["visits_used"], poc["visits_left"]) == (1, 2, 3, 0)
    assert [w["warning"] for w in view["warnings"]] == [
        "2026-11-10 is outside the certified period (2026-11-20 to 2026-12-31)",
        "visit 3 of 2 authorized for 2026-11-20 to 2026-12-31",
    ]
    assert view["warnings"][1]["encounter"] == third["references"]["encounter"][0]
    # A session outside the episode is none of its business.
    assert "warnings" not in post(fhir, "/rehab/sessions", {"patient": pid, **SESSION}).get_json()


def test_recertification_writes_a_new_version(fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    refs = plan_of_care_for(fhir, pid, eid)["references"]
    ref, request = refs["careplan"][0], refs["visits"][0]
    for date in ("2026-11-21T09:00:00Z", "2026-11-23T09:00:00Z", "2026-11-25T09:00:00Z"):
        session(fhir, pid, eid, date)
    renewal = {
        "start": "2026-11-24",
        "end": "2027-01-31",
        "visits_per_week": 1,
        "weeks": 10,
        "visits_authorized": 10,
    }
    r = post(fhir, f"/rehab/episodes/{eid}/recertification", renewal)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json() == {
        "episode": eid,
        "careplan": ref,
        "request": request,
        "version": 2,
        "certification": renewal,
    }
    plan = fhir.call("GET", f"/{ref}").get_json()
    assert plan["meta"]["versionId"] == "2" and plan["period"] == {"start": "2026-11-24", "end": "2027-01-31"}
    assert (
        plan["addresses"]
        and plan["activity"] == fhir.call("GET", f"/{ref}/_history/1").get_json()["activity"]
    )
    visits = fhir.call("GET", f"/{request}").get_json()
    assert visits["meta"]["versionId"] == "2" and visits["quantityQuantity"]["value"] == 10
    old = fhir.call("GET", f"/{ref}/_history/1").get_json()
    assert old["period"] == {"start": "2026-11-20", "end": "2026-12-31"}
    view = fhir.call("GET", f"/rehab/episodes/{eid}").get_json()
    poc = view["plan_of_care"]
    assert (poc["version"], poc["start"], poc["visits_used"], poc["certifications"]) == (
        2,
        "2026-11-24",
        1,
        2,
    )
    # The visits before the renewal were counted in the period that held them: no warning left.
    assert view["warnings"] == []
    assert session(fhir, pid, eid, "2026-11-26T09:00:00Z")["warnings"] == []


def test_recertification_refusals(app: Any, fhir: FhirClient) -> None:
    pid = patient(fhir)
    bare = open_episode(fhir, pid)
    r = post(fhir, f"/rehab/episodes/{bare}/recertification", CERT)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["certification"]
    r = post(fhir, f"/rehab/episodes/{bare}/recertification", {**CERT, "weeks": 0})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["weeks"]
    assert post(fhir, "/rehab/episodes/nope/recertification", CERT).status_code == 404
    eid = open_episode(fhir, pid)
    ref = plan_of_care_for(fhir, pid, eid)["references"]["careplan"][0]
    # Missing scope: re-certifying updates the CarePlan.
    scope = "system/EpisodeOfCare.rs system/CarePlan.rs system/ServiceRequest.rs"
    read_only = FhirClient(app.test_client(), client_credentials_token(app, scope))
    assert post(read_only, f"/rehab/episodes/{eid}/recertification", CERT).status_code == 403
    # Another patient's episode does not exist for a token confined to this one.
    other = open_episode(fhir, patient(fhir))
    scope = f"system/EpisodeOfCare.rs?patient=Patient/{pid} system/CarePlan.rus system/ServiceRequest.rus"
    confined = FhirClient(app.test_client(), client_credentials_token(app, scope))
    assert post(confined, f"/rehab/episodes/{other}/recertification", CERT).status_code == 404
    stored = fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()
    assert fhir.call("PUT", f"/EpisodeOfCare/{eid}", {**stored, "status": "finished"}).status_code == 200
    r = post(fhir, f"/rehab/episodes/{eid}/recertification", CERT)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["episode"]
    assert fhir.call("GET", f"/{ref}").get_json()["meta"]["versionId"] == "1"
