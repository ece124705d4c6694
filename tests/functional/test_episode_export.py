"""GET /rehab/patients/{id}/measures.csv (issue 17, item 7): one row per point with the series keys,
unit and excluded flag; Observation search grant and patient confinement apply. Runs on SQLite and
PostgreSQL (the database_url fixture). Read with the plain test client: the answer is CSV, not JSON."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from fhir_mapping import measures_csv
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.test_episode import patient
from tests.functional.test_episode import patient_token
from tests.functional.test_episode import post
from tests.functional.test_rehab import SESSION

pytestmark = pytest.mark.pg


def get_csv(app: Any, token: str, pid: str) -> Any:
    return app.test_client().get(
        f"/rehab/patients/{pid}/measures.csv", headers={"Authorization": f"Bearer {token}"}
    )


def test_one_row_per_point_with_keys_and_excluded_flag(app: Any, fhir: FhirClient) -> None:
    pid = patient(fhir)
    findings = [
        {"measure": "grip_strength", "value": 50, "unit": "lb", "side": "right"},
        {"measure": "tug_time", "value": 14.2, "unit": "s", "assistive_device": "cane"},
    ]
    body = {"patient": pid, "date": "2026-11-20T10:00:00Z", "findings": findings}
    assert post(fhir, "/rehab/assessments", body).status_code == 201
    assert post(fhir, "/rehab/sessions", {"patient": pid, **SESSION}).status_code == 201
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "preliminary",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "effectiveDateTime": "2026-11-22T10:00:00Z",
            "valueInteger": 5,
        }
    )
    r = get_csv(app, client_credentials_token(app), pid)
    assert r.status_code == 200 and r.mimetype == "text/csv", r.get_data(as_text=True)
    assert r.headers["Content-Disposition"] == f'attachment; filename="measures-{pid}.csv"'
    text = r.get_data(as_text=True)
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(measures_csv.COLUMNS)
    grip = next(row for row in rows if row["measure"] == "grip_strength")
    assert (grip["side"], grip["context"], grip["excluded"], grip["entered_value"], grip["entered_unit"]) == (
        "right",
        "longitudinal",
        "false",
        "50",
        "[lbf_av]",
    )
    tug = next(row for row in rows if row["measure"] == "tug_time")
    assert (tug["assistive_device"], tug["value"], tug["unit"]) == ("cane", "14.2", "s")
    pain = [(row["context"], row["value"], row["excluded"]) for row in rows if row["measure"] == "pain_nrs"]
    assert ("longitudinal", "6", "false") in pain and ("within-session", "4", "false") in pain
    (excluded,) = [row for row in rows if row["excluded"] == "true"]
    assert excluded["value"] == "5" and "preliminary" in excluded["reason"]
    assert len(rows) == 5


def test_grants_and_patients_apply(app: Any, fhir: FhirClient) -> None:
    a, b = patient(fhir), patient(fhir)
    assert get_csv(app, client_credentials_token(app, "system/Patient.rs"), a).status_code == 403
    assert get_csv(app, client_credentials_token(app), "nobody").status_code == 404
    only_a = client_credentials_token(app, f"system/Patient.rs system/Observation.rs?subject=Patient/{a}")
    assert get_csv(app, only_a, a).status_code == 200
    r = get_csv(app, "not-a-token", b)
    assert r.status_code == 401
    # A patient's own token reads their measures; another patient's "does not exist".
    mine = patient_token(app, a, "launch/patient openid fhirUser patient/*.rs")
    assert get_csv(app, mine, a).status_code == 200
    assert get_csv(app, mine, b).status_code == 404
