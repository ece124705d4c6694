"""Goals (issue 17, item 3): achievementStatus and outcomeReference follow each measurement, in the
measurement's transaction; PATCH /rehab/goals/{id} sets them by hand; progress lists each goal with
target, current value and status. Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mapping import goals
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.test_episode import patient
from tests.functional.test_episode import post

pytestmark = pytest.mark.pg
KNEE = {
    "measure": "joint_rom_knee_flexion",
    "side": "left",
    "target": 120,
    "unit": "deg",
    "due": "2027-01-15",
}
TUG = {"measure": "tug_time", "target": 10, "unit": "s"}


def plan(fhir: FhirClient, pid: str, *targets: dict[str, Any]) -> list[str]:
    r = post(fhir, "/rehab/plans", {"patient": pid, "date": "2026-11-20", "goals": list(targets)})
    assert r.status_code == 201, r.get_data(as_text=True)
    return list(r.get_json()["references"]["goal"])


def measure(
    fhir: FhirClient, pid: str, date: str, knee: float | None = None, tug: float | None = None
) -> Any:
    findings = []
    if knee is not None:
        findings.append({"measure": "joint_rom_knee_flexion", "value": knee, "unit": "deg", "side": "left"})
    if tug is not None:
        findings.append({"measure": "tug_time", "value": tug, "unit": "s"})
    r = post(fhir, "/rehab/assessments", {"patient": pid, "date": f"{date}T10:00:00Z", "findings": findings})
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def knee_finding(fhir: FhirClient, pid: str, when: str, value: float) -> Any:
    """POST /rehab/assessments of one left knee flexion finding; the raw response."""
    finding = {"measure": "joint_rom_knee_flexion", "value": value, "unit": "deg", "side": "left"}
    return post(fhir, "/rehab/assessments", {"patient": pid, "date": when, "findings": [finding]})


def status(fhir: FhirClient, ref: str) -> tuple[str | None, str | None]:
    goal = fhir.call("GET", f"/{ref}").get_json()
    outcome = (goal.get("outcomeReference") or [{}])[0].get("reference")
    return goals.achievement_of(goal), outcome


def test_each_measurement_moves_the_goal(fhir: FhirClient) -> None:
    pid = patient(fhir)
    (knee,) = plan(fhir, pid, KNEE)
    steps = [
        ("2026-11-20", 95, "in-progress"),
        ("2026-11-27", 105, "improving"),
        ("2026-12-01", 100, "worsening"),
        ("2026-12-03", 100, "no-change"),
        ("2026-12-05", 125, "achieved"),
    ]
    for date, value, expected in steps:
        answer = measure(fhir, pid, date, knee=value)
        assert answer["updated"] == [{"reference": knee, "summary": expected}], (date, answer.get("updated"))
        assert status(fhir, knee) == (expected, answer["references"]["finding"][0])
    goal = fhir.call("GET", f"/{knee}").get_json()
    assert goal["achievementStatus"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
            "code": "achieved",
            "display": "Achieved",
        }
    ]
    assert goal["lifecycleStatus"] == "active" and goal["meta"]["versionId"] == "6"
    # A measurement of another measure leaves the goal alone.
    assert "updated" not in measure(fhir, pid, "2026-12-06", tug=12)


def test_lower_is_better_and_missed_due_date(fhir: FhirClient) -> None:
    pid = patient(fhir)
    (tug,) = plan(fhir, pid, TUG)
    (late,) = plan(fhir, pid, {**KNEE, "due": "2026-11-25"})
    answer = measure(fhir, pid, "2026-11-21", knee=90, tug=14.2)
    assert {u["reference"]: u["summary"] for u in answer["updated"]} == {
        tug: "in-progress",
        late: "in-progress",
    }
    answer = measure(fhir, pid, "2026-11-27", knee=110, tug=9.5)
    assert {u["reference"]: u["summary"] for u in answer["updated"]} == {
        tug: "achieved",
        late: "not-achieved",
    }


def test_progress_shows_each_goal(fhir: FhirClient) -> None:
    pid = patient(fhir)
    knee, tug = plan(fhir, pid, KNEE, TUG)
    measure(fhir, pid, "2026-11-21", knee=95)
    measure(fhir, pid, "2026-11-28", knee=100)
    progress = fhir.call("GET", f"/rehab/patients/{pid}/progress").get_json()
    by_ref = {g["goal"]: g for g in progress["goals"]}
    assert (
        by_ref[knee]["target"] == 120
        and by_ref[knee]["side"] == "left"
        and by_ref[knee]["due"] == "2027-01-15"
    )
    assert by_ref[knee]["current"]["value"] == 100 and by_ref[knee]["achievement"] == "improving"
    assert by_ref[tug]["current"] is None and by_ref[tug]["achievement"] is None


def test_goals_need_the_grants_to_move(app: Any, fhir: FhirClient) -> None:
    pid = patient(fhir)
    (knee,) = plan(fhir, pid, KNEE)
    scope = "system/Patient.rs system/Encounter.c system/Observation.crs system/Goal.rs"
    no_goal_update = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = knee_finding(no_goal_update, pid, "2026-11-21T10:00:00Z", 125)
    assert r.status_code == 201 and "updated" not in r.get_json()
    assert status(fhir, knee) == (None, None)
    # Progress without a Goal search grant lists no goals.
    obs_only = FhirClient(
        app.test_client(), client_credentials_token(app, "system/Patient.rs system/Observation.rs")
    )
    assert obs_only.call("GET", f"/rehab/patients/{pid}/progress").get_json()["goals"] == []


def test_patch_sets_status_by_hand_and_stops_tracking(fhir: FhirClient) -> None:
    pid = patient(fhir)
    (knee,) = plan(fhir, pid, KNEE)
    id_ = knee.split("/")[1]
    r = fhir.call(
        "PATCH",
        f"/rehab/goals/{id_}",
        {"achievement": "not-attainable", "lifecycle": "cancelled", "note": "Surgery planned"},
        content_type="application/json",
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json() == {
        "goal": knee,
        "version": 2,
        "lifecycle": "cancelled",
        "achievement": "not-attainable",
        "notes": ["Surgery planned"],
    }
    # A goal no longer sought is not moved by later measurements.
    assert "updated" not in measure(fhir, pid, "2026-11-21", knee=125)
    assert status(fhir, knee)[0] == "not-attainable"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"achievement": "done"}, "achievement"), ({"lifecycle": "finished"}, "lifecycle"), ({}, "achievement")],
    ids=["achievement", "lifecycle", "empty"],
)
def test_bad_patch_is_400(fhir: FhirClient, body: dict[str, Any], field: str) -> None:
    (knee,) = plan(fhir, patient(fhir), KNEE)
    r = fhir.call("PATCH", f"/rehab/goals/{knee.split('/')[1]}", body, content_type="application/json")
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == [field]
    assert fhir.call("GET", f"/{knee}").get_json()["meta"]["versionId"] == "1"


def test_patch_refusals(app: Any, fhir: FhirClient) -> None:
    a, b = patient(fhir), patient(fhir)
    (mine,) = plan(fhir, a, KNEE)
    (theirs,) = plan(fhir, b, KNEE)
    body = {"lifecycle": "completed"}
    assert fhir.call("PATCH", "/rehab/goals/nope", body, content_type="application/json").status_code == 404
    read_only = FhirClient(app.test_client(), client_credentials_token(app, "system/Goal.rs"))
    r = read_only.call("PATCH", f"/rehab/goals/{mine.split('/')[1]}", body, content_type="application/json")
    assert r.status_code == 403
    confined = FhirClient(
        app.test_client(),
        client_credentials_token(app, f"system/Patient.rs system/Goal.rus?subject=Patient/{a}"),
    )
    r = confined.call("PATCH", f"/rehab/goals/{theirs.split('/')[1]}", body, content_type="application/json")
    assert r.status_code == 404
    r = confined.call("PATCH", f"/rehab/goals/{mine.split('/')[1]}", body, content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)


def elsewhere(write: Any) -> Any:
    """Run another request's `write` on a thread of its own, as a concurrent request would be (a
    request made from inside a request would share its app context and replace its session)."""
    import threading

    out: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(write())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failed:
        raise failed[0]
    return out[0] if out else None


def test_a_goal_changed_meanwhile_is_read_again_not_refused(fhir: FhirClient, monkeypatch: Any) -> None:
    """Two measurements at once: the second's If-Match on the goal fails (another write moved it
    after `track` read it). The server reads the goal again and recomputes instead of answering
    412. Played by a goal note written between the read and the transaction, on its first try."""
    from server.api import rehab_goals

    pid = patient(fhir)
    (knee,) = plan(fhir, pid, KNEE)
    measure(fhir, pid, "2026-11-20", knee=95)
    one = fhir.call("GET", f"/Observation?subject=Patient/{pid}&_summary=count").get_json()["total"]
    real_track, calls = rehab_goals.track, []
    other = FhirClient(fhir.c.application.test_client(), fhir.token)

    def track_then_someone_writes(patient_ref: str, entries: Any) -> Any:
        updates = real_track(patient_ref, entries)
        calls.append(len(updates))
        if len(calls) == 1:  # another clinician's write commits after this read
            elsewhere(note)
        return updates

    def note() -> None:
        goal = other.call("GET", f"/{knee}").get_json()
        goal.pop("meta")
        goal["note"] = [{"text": "reviewed with the patient"}]
        assert other.call("PUT", f"/{knee}", goal).status_code == 200

    monkeypatch.setattr(rehab_goals, "track", track_then_someone_writes)
    r = knee_finding(fhir, pid, "2026-11-27T10:00:00Z", 105)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert calls == [1, 1]  # read, refused by If-Match, read again
    goal = fhir.call("GET", f"/{knee}").get_json()
    assert goal["note"] == [{"text": "reviewed with the patient"}]  # the other write is kept
    assert goals.achievement_of(goal) == "improving" and goal["meta"]["versionId"] == "4"
    # Two assessments' Observations in all: the refused try wrote nothing.
    assert (
        fhir.call("GET", f"/Observation?subject=Patient/{pid}&_summary=count").get_json()["total"] == 2 * one
    )


def test_a_goal_that_keeps_changing_is_refused_after_the_last_attempt(
    fhir: FhirClient, monkeypatch: Any
) -> None:
    from server.api import rehab_goals

    pid = patient(fhir)
    (knee,) = plan(fhir, pid, KNEE)
    real_track = rehab_goals.track
    other = FhirClient(fhir.c.application.test_client(), fhir.token)

    def always_someone_writes(patient_ref: str, entries: Any) -> Any:
        updates = real_track(patient_ref, entries)
        elsewhere(touch)
        return updates

    def touch() -> None:
        goal = other.call("GET", f"/{knee}").get_json()
        goal.pop("meta")
        assert other.call("PUT", f"/{knee}", goal).status_code == 200

    monkeypatch.setattr(rehab_goals, "track", always_someone_writes)
    r = knee_finding(fhir, pid, "2026-11-27T10:00:00Z", 105)
    assert r.status_code == 412 and r.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.call("GET", f"/Observation?subject=Patient/{pid}&_summary=count").get_json()["total"] == 0
