"""Discharge (issue 17, item 5): POST /rehab/episodes/{id}/discharge closes the episode and writes the
discharge summary Composition in one transaction; GET /Composition/{id}/$document is the document
Bundle. Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.test_episode import count
from tests.functional.test_episode import open_episode
from tests.functional.test_episode import patient
from tests.functional.test_episode import patient_token
from tests.functional.test_episode import post
from tests.functional.test_episode import practitioner
from tests.functional.test_episode_goals import KNEE
from tests.functional.test_episode_goals import TUG
from tests.functional.test_episode_goals import elsewhere
from tests.functional.test_episode_plan import CERT
from tests.functional.test_rehab import SESSION

pytestmark = pytest.mark.pg
BRIDGES = {
    "exercise": "Bridges",
    "sets": 3,
    "reps": 10,
    "frequency": {"times": 1, "period": 1, "period_unit": "d"},
}
DISCHARGE = {"date": "2026-12-01", "reason": "Goals met", "note": "Continue the home program"}


def knee(fhir: FhirClient, pid: str, eid: str, date: str, value: float) -> None:
    finding = {"measure": "joint_rom_knee_flexion", "value": value, "unit": "deg", "side": "left"}
    body = {"patient": pid, "episode": eid, "date": f"{date}T10:00:00Z", "findings": [finding]}
    assert post(fhir, "/rehab/assessments", body).status_code == 201


def episode_of_care(fhir: FhirClient, *goals: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """A patient's whole episode: plan of care, two assessments, two sessions, a day of home program."""
    pid = patient(fhir)
    eid = open_episode(fhir, pid, care_manager=practitioner(fhir, "pt1"))
    plan = {
        "patient": pid,
        "episode": eid,
        "date": "2026-11-20",
        "goals": list(goals or [KNEE]),
        "exercises": [BRIDGES],
    }
    r = post(fhir, "/rehab/plans", {**plan, "certification": CERT})
    assert r.status_code == 201, r.get_data(as_text=True)
    knee(fhir, pid, eid, "2026-11-20", 95)
    for date in ("2026-11-21T09:00:00Z", "2026-11-23T09:00:00Z"):
        assert (
            post(
                fhir, "/rehab/sessions", {"patient": pid, "episode": eid, **SESSION, "date": date}
            ).status_code
            == 201
        )
    knee(fhir, pid, eid, "2026-11-27", 125)
    done = {"exercise": "Bridges", "status": "done"}
    assert (
        post(
            fhir, "/rehab/adherence", {"patient": pid, "date": "2026-11-21", "exercises": [done]}
        ).status_code
        == 201
    )
    return pid, eid, r.get_json()["references"]


def test_discharge_closes_the_episode_and_writes_the_document(fhir: FhirClient) -> None:
    pid, eid, refs = episode_of_care(fhir)
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 201, r.get_data(as_text=True)
    answer = r.get_json()
    summary = answer["summary"]
    (rom,) = [m for m in summary["measures"] if m["measure"] == "joint_rom_knee_flexion"]
    assert (rom["baseline"]["value"], rom["discharge"]["value"], rom["change"]) == (95, 125, 30)
    assert [(g["goal"], g["met"]) for g in summary["goals"]] == [(refs["goal"][0], True)]
    assert summary["visits"]["used"] == 2 and summary["visits"]["authorized"] == 2
    assert summary["home_program"][0]["exercises"][0]["exercise"] == "Bridges"
    assert summary["reason"] == "Goals met" and summary["note"] == "Continue the home program"

    episode = fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()
    assert episode["status"] == "finished" and episode["period"] == {
        "start": "2026-11-20",
        "end": "2026-12-01",
    }
    assert episode["statusHistory"] == [{"status": "active", "period": episode["period"]}]
    composition = fhir.call("GET", "/" + answer["composition"]).get_json()
    assert composition["type"]["coding"] == [
        {"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}
    ]
    assert composition["author"] == [{"reference": "Practitioner/pt1"}]  # the care manager
    assert composition["event"][0]["detail"] == [{"reference": f"EpisodeOfCare/{eid}"}]
    assert [s["title"] for s in composition["section"]][:3] == [
        "Reason for discharge",
        "Condition treated",
        "Outcome measures: baseline and discharge",
    ]
    assert all(
        s["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
        for s in composition["section"]
    )

    r = fhir.call("GET", f"/{answer['document']}")
    assert r.status_code == 200, r.get_data(as_text=True)
    document = r.get_json()
    assert document["type"] == "document" and document["identifier"]["system"] == "urn:ietf:rfc:3986"
    types = [e["resource"]["resourceType"] for e in document["entry"]]
    assert types[0] == "Composition"
    assert {
        "Patient",
        "Practitioner",
        "EpisodeOfCare",
        "Condition",
        "Observation",
        "Goal",
        "Encounter",
        "CarePlan",
    } <= set(types)
    assert fhir.call("GET", f"/{answer['document']}").get_json()["identifier"] == document["identifier"]
    assert fhir.call("GET", f"/rehab/episodes/{eid}").get_json()["discharge"] == answer["composition"]

    # Discharge twice, or link anything to the closed episode: 400 naming episode, nothing stored.
    again = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert again.status_code == 400 and again.get_json()["issue"][0]["expression"] == ["episode"]
    late = post(fhir, "/rehab/sessions", {"patient": pid, "episode": eid, **SESSION})
    assert late.status_code == 400 and late.get_json()["issue"][0]["expression"] == ["episode"]
    assert count(fhir, "Composition") == 1


def test_discharge_ends_the_plan_of_care(fhir: FhirClient) -> None:
    """The episode's CarePlan and its visits ServiceRequest are completed, its goals completed when met
    (the knee) else cancelled (TUG, never measured), their achievementStatus kept; no day of home program
    can be added to the plan any more; the views still show the plan of care and the days recorded."""
    pid, eid, refs = episode_of_care(fhir, KNEE, TUG)
    (careplan,), (visits,), (knee_goal, tug_goal) = refs["careplan"], refs["visits"], refs["goal"]
    before = {ref: fhir.call("GET", f"/{ref}").get_json() for ref in (careplan, visits, knee_goal, tug_goal)}
    assert before[careplan]["status"] == before[visits]["status"] == "active"
    assert before[knee_goal]["achievementStatus"]["coding"][0]["code"] == "achieved"
    assert post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE).status_code == 201
    after = {ref: fhir.call("GET", f"/{ref}").get_json() for ref in before}
    assert after[careplan]["status"] == "completed" and after[visits]["status"] == "completed"
    assert (after[knee_goal]["lifecycleStatus"], after[tug_goal]["lifecycleStatus"]) == (
        "completed",
        "cancelled",
    )
    assert after[knee_goal]["achievementStatus"] == before[knee_goal]["achievementStatus"]
    assert "achievementStatus" not in after[tug_goal]
    for ref, new in after.items():  # one new version each, nothing else changed
        assert int(new["meta"]["versionId"]) == int(before[ref]["meta"]["versionId"]) + 1
        changed = {k for k in new if new[k] != before[ref].get(k)} - {"meta"}
        assert changed == ({"lifecycleStatus"} if ref.startswith("Goal/") else {"status"}), (ref, changed)

    # No more home program days on the plan, named or not: 400 naming plan, nothing stored.
    done = {"exercise": "Bridges", "status": "done"}
    day = {"patient": pid, "date": "2026-11-30", "exercises": [done]}
    stored = count(fhir, "Observation")
    for body in (day, {**day, "plan": careplan.split("/")[1]}):
        r = post(fhir, "/rehab/adherence", body)
        assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["plan"], r.get_data(
            as_text=True
        )
    assert count(fhir, "Observation") == stored

    # The episode view keeps its plan of care; progress keeps the day recorded and the goals' outcome.
    view = fhir.call("GET", f"/rehab/episodes/{eid}").get_json()
    poc = view["plan_of_care"]
    assert (poc["careplan"], poc["visits_used"], poc["certifications"]) == (careplan, 2, 1)
    assert view["status"] == "finished" and view["plans"][0]["status"] == "completed"
    progress = fhir.call("GET", f"/rehab/patients/{pid}/progress").get_json()
    (report,) = progress["adherence"]
    assert report["plan"] == careplan and report["exercises"][0]["days_recorded"] == 1
    goals = {g["goal"]: (g["lifecycle"], g["achievement"]) for g in progress["goals"]}
    assert goals == {knee_goal: ("completed", "achieved"), tug_goal: ("cancelled", None)}


def test_a_plan_of_a_finished_episode_takes_no_adherence(fhir: FhirClient) -> None:
    """An episode finished through plain FHIR leaves its plan active: its days are still refused."""
    pid, eid, refs = episode_of_care(fhir)
    episode = fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()
    closed = {k: v for k, v in episode.items() if k != "meta"} | {"status": "finished"}
    assert fhir.call("PUT", f"/EpisodeOfCare/{eid}", closed).status_code == 200
    day = {"patient": pid, "date": "2026-11-22", "exercises": [{"exercise": "Bridges", "status": "done"}]}
    stored = count(fhir, "Observation")
    r = post(fhir, "/rehab/adherence", {**day, "plan": refs["careplan"][0].split("/")[1]})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["plan"]
    assert f"EpisodeOfCare/{eid}" in r.get_json()["issue"][0]["diagnostics"]
    r = post(fhir, "/rehab/adherence", day)  # the active plan is not chosen either
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["plan"]
    assert count(fhir, "Observation") == stored


def test_a_token_that_may_not_close_the_plan_is_refused(app: Any, fhir: FhirClient) -> None:
    """Closing the plan of care is part of the discharge: without CarePlan update, 403 and nothing written."""
    _, eid, refs = episode_of_care(fhir)
    types = ("Patient", "Practitioner", "EpisodeOfCare", "Condition", "Encounter", "CarePlan")
    scope = " ".join(
        f"system/{t}.rs" for t in (*types, "QuestionnaireResponse", "ServiceRequest", "Observation", "Goal")
    )
    scope += " system/Composition.cr system/EpisodeOfCare.u system/ServiceRequest.u system/Goal.u"
    no_plan_update = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = post(no_plan_update, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 403, r.get_data(as_text=True)
    assert fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()["status"] == "active"
    assert fhir.call("GET", "/" + refs["careplan"][0]).get_json()["status"] == "active"
    assert fhir.call("GET", "/" + refs["goal"][0]).get_json()["lifecycleStatus"] == "active"
    assert count(fhir, "Composition") == 0
    scope += " system/CarePlan.u"  # with it, the same discharge goes through
    allowed = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = post(allowed, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert fhir.call("GET", "/" + refs["careplan"][0]).get_json()["status"] == "completed"


def test_the_scopes_the_document_declares_discharge(app: Any, fhir: FhirClient) -> None:
    """GET /rehab/openapi.json's security for the discharge: those system scopes alone are enough."""
    _, eid, _ = episode_of_care(fhir)
    document = fhir.call("GET", "/rehab/openapi.json").get_json()
    security = document["paths"]["/rehab/episodes/{id}/discharge"]["post"]["security"]
    scope = " ".join(s for req in security for s in req["smart"] if s.startswith("system/"))
    assert {"system/CarePlan.u", "system/ServiceRequest.u", "system/Goal.u"} <= set(scope.split())
    declared = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = post(declared, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 201, r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"date": "2026-12-01"}, "reason"),
        ({**DISCHARGE, "date": "2026-11-01"}, "date"),
        ({**DISCHARGE, "date": "2027-06-01"}, "date"),
        ({**DISCHARGE, "author": "nobody"}, "author"),
    ],
    ids=["no-reason", "before-start", "future", "unknown-author"],
)
def test_bad_discharge_is_400_and_changes_nothing(fhir: FhirClient, body: dict[str, Any], field: str) -> None:
    eid = open_episode(fhir, patient(fhir))
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", body)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == [field], r.get_data(
        as_text=True
    )
    assert fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()["status"] == "active"
    assert count(fhir, "Composition") == 0


def test_discharge_needs_an_author_and_the_grants(app: Any, fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)  # no care manager, and a system token has no fhirUser
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["author"]
    practitioner(fhir, "pt2")
    assert post(fhir, "/rehab/episodes/nope/discharge", {**DISCHARGE, "author": "pt2"}).status_code == 404
    scope = " ".join(
        f"system/{t}.rs"
        for t in (
            "Patient",
            "Practitioner",
            "EpisodeOfCare",
            "Encounter",
            "CarePlan",
            "QuestionnaireResponse",
        )
    )
    scope += " system/ServiceRequest.rs system/Observation.rs system/Goal.rs system/EpisodeOfCare.u"
    no_composition = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = post(no_composition, f"/rehab/episodes/{eid}/discharge", {**DISCHARGE, "author": "pt2"})
    assert r.status_code == 403
    assert fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()["status"] == "active"
    # Another patient's token, even one that may write: this episode does not exist for it.
    other = patient(fhir)
    theirs = FhirClient(
        app.test_client(), patient_token(app, other, "launch/patient openid fhirUser patient/*.cruds")
    )
    r = post(theirs, f"/rehab/episodes/{eid}/discharge", {**DISCHARGE, "author": "pt2"})
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"
    assert fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()["status"] == "active"


def test_document_shows_only_what_the_token_may_read(app: Any, fhir: FhirClient) -> None:
    _, eid, _ = episode_of_care(fhir)
    ref = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE).get_json()["composition"]
    compositions_only = FhirClient(app.test_client(), client_credentials_token(app, "system/Composition.rs"))
    r = compositions_only.call("GET", f"/{ref}/$document")
    assert r.status_code == 200
    assert [e["resource"]["resourceType"] for e in r.get_json()["entry"]] == ["Composition"]
    other = patient(fhir)
    confined = FhirClient(
        app.test_client(), client_credentials_token(app, f"system/Composition.rs?subject=Patient/{other}")
    )
    r = confined.call("GET", f"/{ref}/$document")
    assert r.status_code == 404
    no_read = FhirClient(app.test_client(), client_credentials_token(app, "system/Patient.rs"))
    assert no_read.call("GET", f"/{ref}/$document").status_code == 403
    assert fhir.call("GET", "/Composition/nope/$document").status_code == 404


def test_an_episode_without_a_start_is_discharged(fhir: FhirClient) -> None:
    """An EpisodeOfCare written through FHIR need not have a period: its summary's period only ends."""
    pid = patient(fhir)
    episode = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"reference": f"Patient/{pid}"},
        "careManager": {"reference": f"Practitioner/{practitioner(fhir, 'pt1')}"},
    }
    r = fhir.call("POST", "/EpisodeOfCare", episode)
    assert r.status_code == 201, r.get_data(as_text=True)
    eid = r.headers["Location"].split("/EpisodeOfCare/")[1].split("/")[0]
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 201, r.get_data(as_text=True)
    composition = fhir.call("GET", f"/{r.get_json()['composition']}").get_json()
    assert composition["event"][0]["period"] == {"end": DISCHARGE["date"]}
    assert fhir.call("GET", f"/EpisodeOfCare/{eid}").get_json()["status"] == "finished"


def _meanwhile(monkeypatch: Any, write: Any) -> list[int]:
    """Run `write` (another request's write) once, after the discharge read what it will PUT back."""
    from server.api import rehab_discharge

    real, calls = rehab_discharge._gather, []

    def gather_then_someone_writes(*args: Any) -> Any:
        out = real(*args)
        calls.append(1)
        if len(calls) == 1:
            elsewhere(write)
        return out

    monkeypatch.setattr(rehab_discharge, "_gather", gather_then_someone_writes)
    return calls


def test_a_goal_changed_during_the_discharge_is_read_again(fhir: FhirClient, monkeypatch: Any) -> None:
    """A goal moved by another request between the discharge's read and its transaction (If-Match
    fails, 412): the discharge reads everything again and goes through, keeping that write."""
    pid, eid, refs = episode_of_care(fhir, KNEE)
    (knee_goal,) = refs["goal"]
    other = FhirClient(fhir.c.application.test_client(), fhir.token)

    def note_on_the_goal() -> None:
        goal = other.call("GET", f"/{knee_goal}").get_json()
        goal.pop("meta")
        goal["note"] = [{"text": "reviewed before discharge"}]
        assert other.call("PUT", f"/{knee_goal}", goal).status_code == 200

    calls = _meanwhile(monkeypatch, note_on_the_goal)
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert len(calls) == 2  # read, refused by If-Match, read again
    goal = fhir.call("GET", f"/{knee_goal}").get_json()
    assert goal["note"] == [{"text": "reviewed before discharge"}] and goal["lifecycleStatus"] != "active"
    assert count(fhir, "Composition") == 1


def test_a_discharge_that_lost_the_race_is_a_400_naming_the_episode(
    fhir: FhirClient, monkeypatch: Any
) -> None:
    pid, eid, _ = episode_of_care(fhir, KNEE)
    other = FhirClient(fhir.c.application.test_client(), fhir.token)
    winner: list[Any] = []
    calls = _meanwhile(
        monkeypatch, lambda: winner.append(post(other, f"/rehab/episodes/{eid}/discharge", DISCHARGE))
    )
    r = post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE)
    assert winner[0].status_code == 201, winner[0].get_data(as_text=True)
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["episode"], r.get_data(
        as_text=True
    )
    assert len(calls) == 2 and count(fhir, "Composition") == 1
