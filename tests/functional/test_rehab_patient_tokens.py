"""/rehab writes with a patient app's token that may not read Patients (Observation and Encounter only).

Another patient's id must look exactly like an id that does not exist (400 naming `patient`):
before, it passed the existence check (only Patient read can see a Patient) and its write was then
refused 403 by the compartment, an oracle of which patient ids exist. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FhirClient
from tests.functional.test_audit import events
from tests.functional.test_episode import open_episode
from tests.functional.test_episode import patient
from tests.functional.test_episode import patient_token
from tests.functional.test_episode import post

pytestmark = pytest.mark.pg
SCOPE = "launch/patient openid fhirUser patient/Observation.crs patient/Encounter.c"
PAIN = {"measure": "pain_nrs", "value": 4, "unit": "{score}"}


def assess(client: FhirClient, pid: str) -> Any:
    return post(
        client, "/rehab/assessments", {"patient": pid, "date": "2026-11-20T10:00:00Z", "findings": [PAIN]}
    )


def test_another_patient_looks_like_no_patient(app: Any, fhir: FhirClient) -> None:
    own, other = patient(fhir), patient(fhir)
    app_client = FhirClient(app.test_client(), patient_token(app, own, SCOPE))
    r = assess(app_client, own)
    assert r.status_code == 201, r.get_data(as_text=True)
    answers = []
    episode = open_episode(fhir, other)
    for pid, more in (
        (other, {}),
        ("no-such-patient", {}),
        (other, {"episode": episode}),
        (other, {"episode": "x"}),
    ):
        r = post(
            app_client,
            "/rehab/assessments",
            {"patient": pid, "date": "2026-11-20T10:00:00Z", "findings": [PAIN], **more},
        )
        assert r.status_code == 400, r.get_data(as_text=True)
        issue = r.get_json()["issue"][0]
        answers.append((issue["expression"], issue["diagnostics"].replace(pid, "<id>")))
    assert all(a == (["patient"], "Patient/<id> does not exist") for a in answers), answers
    count = fhir.call("GET", f"/Observation?subject=Patient/{other}&_summary=count").get_json()
    assert count["total"] == 0


def test_a_refused_write_names_its_patient_once_it_is_known(app: Any, fhir: FhirClient) -> None:
    """Refused after the patient was found (here: the write needs Encounter create, which the token
    lacks: 403), the event names the patient; refused because the patient does not exist for the
    token, it names nobody."""
    own, other = patient(fhir), patient(fhir)
    scope = "launch/patient openid fhirUser patient/Observation.crs"
    app_client = FhirClient(app.test_client(), patient_token(app, own, scope))
    first = len(events(app))
    assert assess(app_client, own).status_code == 403
    assert assess(app_client, other).status_code == 400
    refused = [(r["outcome"], r["patient"]) for r in events(app)[first:] if r["outcome"]]
    assert refused == [(8, f"Patient/{own}"), (4, None)], refused  # 8: denied (403); 4: refused (400)
