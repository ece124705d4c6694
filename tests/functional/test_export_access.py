"""Bulk Data $export under the access policy: the kick-off grant, file downloads, the `patient` parameter.

Every test runs on SQLite and PostgreSQL with real client_credentials tokens. The expected
contents are written from the data seeded here (category, subject), not from the policy code.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from server.bulk.worker import grant_context
from server.fhir.access import restrict_query
from server.fhir.search.query import SearchQuery
from server.store import exporting
from server.store import jobs
from tests.conftest import FhirClient
from tests.functional.test_export import ASYNC
from tests.functional.test_export import download
from tests.functional.test_export import export_dir  # noqa: F401  (autouse: each test its own files)
from tests.functional.test_export import kick_off
from tests.functional.test_export import local
from tests.functional.test_export import paused_worker
from tests.functional.test_export import wait

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS = f"system/Observation.rs?category={CATEGORY}|vital-signs"
ALLOWED = "system/*.rs"


@dataclass
class Seeded:
    a: str
    b: str
    c: str  # in no group
    group: str
    obs: dict[str, str]  # "A.vital", "A.lab", "B.vital", "B.lab", "C.vital" -> id


def _register(app: Any, scope: str = ALLOWED) -> tuple[str, str]:
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("export-tests", scope, "symmetric")
    return client.client_id, secret or ""


def _token(app: Any, client: tuple[str, str], scope: str) -> str:
    """A real client_credentials token of `client` for exactly `scope`."""
    basic = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": "Basic " + basic},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["scope"] == scope
    return str(r.get_json()["access_token"])


def _client(app: Any, client: tuple[str, str], scope: str) -> FhirClient:
    return FhirClient(app.test_client(), _token(app, client, scope))


def _observation(patient: str, category: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"text": category},
        "subject": {"reference": f"Patient/{patient}"},
    }


@pytest.fixture
def seeded(fhir: FhirClient) -> Seeded:
    """Patients A (female), B, C; vital-signs and laboratory Observations; Group {A, B}; a Practitioner."""
    a = fhir.create({"resourceType": "Patient", "gender": "female"})["id"]
    b = fhir.create({"resourceType": "Patient", "gender": "male"})["id"]
    c = fhir.create({"resourceType": "Patient", "gender": "male"})["id"]
    obs = {
        label: fhir.create(_observation(pid, category))["id"]
        for label, pid, category in (
            ("A.vital", a, "vital-signs"),
            ("A.lab", a, "laboratory"),
            ("B.vital", b, "vital-signs"),
            ("B.lab", b, "laboratory"),
            ("C.vital", c, "vital-signs"),
        )
    }
    group = fhir.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{a}"}}, {"entity": {"reference": f"Patient/{b}"}}],
        }
    )["id"]
    fhir.create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
    return Seeded(a=a, b=b, c=c, group=group, obs=obs)


def _files(client: FhirClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Download every output file: type -> resources."""
    return {
        o["type"]: [orjson.loads(line) for line in download(client, o["url"])] for o in manifest["output"]
    }


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


def _post(client: FhirClient, path: str, parameters: list[dict[str, Any]]) -> Any:
    body = {"resourceType": "Parameters", "parameter": parameters}
    return client.call("POST", path, body, headers=ASYNC)


def _patient_param(*ids: str) -> list[dict[str, Any]]:
    return [{"name": "patient", "valueReference": {"reference": f"Patient/{i}"}} for i in ids]


def _outcome(r: Any, status: int, code: str, text: str) -> None:
    assert r.status_code == status, r.get_data(as_text=True)
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["code"] == code and text in oo["issue"][0]["diagnostics"], oo


# ------------------------------------------------------------------------- 1. the kick-off grant


def test_category_restricted_grant_exports_only_vital_signs(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), VITALS)
    out = wait(client, kick_off(client, "/$export?_type=Observation"))
    files = _files(client, out)
    assert _ids(files["Observation"]) == {seeded.obs["A.vital"], seeded.obs["B.vital"], seeded.obs["C.vital"]}
    assert [o["count"] for o in out["output"]] == [3]


def test_without_type_only_granted_types_are_exported(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), VITALS)
    out = wait(client, kick_off(client, "/$export"))
    assert [o["type"] for o in out["output"]] == ["Observation"]  # no Patient, Group, Practitioner
    assert len(_files(client, out)["Observation"]) == 3


def test_type_outside_the_grant_is_refused_at_kick_off(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), VITALS)
    _outcome(
        client.call("GET", "/$export?_type=Observation,Patient", headers=ASYNC), 403, "forbidden", "Patient"
    )


def test_rules_on_different_parameters_are_judged_per_resource(
    app: Any, fhir: FhirClient, seeded: Seeded
) -> None:
    """No single SQL narrowing covers both rules: each resource is let through by one rule or none."""
    prelim = fhir.create(_observation(seeded.a, "laboratory", status="preliminary"))["id"]
    client = _client(app, _register(app), f"{VITALS} system/Observation.rs?status=preliminary")
    out = wait(client, kick_off(client, "/$export?_type=Observation"))
    expected = {seeded.obs["A.vital"], seeded.obs["B.vital"], seeded.obs["C.vital"], prelim}
    assert _ids(_files(client, out)["Observation"]) == expected


def test_patient_level_export_under_a_restricted_grant(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), f"system/Patient.rs?gender=female {VITALS}")
    out = wait(client, kick_off(client, "/Patient/$export"))
    files = _files(client, out)
    assert _ids(files["Patient"]) == {seeded.a}
    assert _ids(files["Observation"]) == {seeded.obs["A.vital"], seeded.obs["B.vital"], seeded.obs["C.vital"]}


def test_the_worker_query_is_narrowed_in_sql(app: Any, seeded: Seeded) -> None:
    """Before any per-resource check, the streaming query itself holds only what the grant's rules name."""
    job = jobs.JobView(**{**_blank_job(), "grant_scopes": VITALS})
    ctx = grant_context(job)
    access = restrict_query(ctx, SearchQuery(types=("Observation",)), "r")
    with app.extensions["rehabfhir.sessions"]() as session:
        bodies = list(exporting.stream_bodies(session, "Observation", until=jobs.now(), access=access))
    assert {orjson.loads(b)["id"] for b in bodies} == {
        seeded.obs["A.vital"],
        seeded.obs["B.vital"],
        seeded.obs["C.vital"],
    }


def _blank_job() -> dict[str, Any]:
    return {name: None for name in jobs.JobView.__dataclass_fields__} | {"types": [], "type_filters": []}


def test_the_job_runs_under_the_recorded_grant(app: Any, seeded: Seeded) -> None:
    client_id, secret = _register(app)
    client = _client(app, (client_id, secret), VITALS)
    with paused_worker(app):
        status = kick_off(client, "/$export?_type=Observation")
        with app.extensions["rehabfhir.engine"].connect() as conn:
            row = conn.execute(sa.select(jobs.ExportJob.grant_scopes, jobs.ExportJob.client_id)).one()
        assert tuple(row) == (VITALS, client_id)
    assert [o["count"] for o in wait(client, status)["output"]] == [3]


def test_a_job_without_a_recorded_grant_exports_nothing(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), ALLOWED)
    with paused_worker(app):
        status = kick_off(client, "/$export")
        with app.extensions["rehabfhir.engine"].begin() as conn:
            conn.execute(sa.update(jobs.ExportJob).values(grant_scopes=None))  # as queued before c002
    deadline = time.monotonic() + 30
    while (r := client.call("GET", status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    _outcome(r, 500, "exception", "without a recorded grant")


# ----------------------------------------------------------------------------- 2. the downloads


def test_files_only_for_tokens_that_read_their_type(app: Any, seeded: Seeded) -> None:
    owner = _register(app)
    kicker = _client(app, owner, "system/Patient.rs system/Observation.rs")
    status = kick_off(kicker, "/$export?_type=Patient,Observation")
    urls = {o["type"]: o["url"] for o in wait(kicker, status)["output"]}
    narrow = _client(app, owner, "system/Observation.read")  # the same client, without Patient
    assert narrow.call("GET", status).status_code == 200
    assert len(download(narrow, urls["Observation"])) == 5
    r = narrow.call("GET", local(urls["Patient"]), headers={"Accept": "application/fhir+ndjson"})
    _outcome(r, 403, "forbidden", "Patient")
    assert seeded.a not in r.get_data(as_text=True)


def test_status_and_files_refused_to_another_client(app: Any, seeded: Seeded) -> None:
    kicker = _client(app, _register(app), ALLOWED)
    status = kick_off(kicker, "/$export?_type=Patient")
    out = wait(kicker, status)
    other = _client(app, _register(app), ALLOWED)  # same scopes, another client
    _outcome(other.call("GET", status), 403, "forbidden", "another client")
    r = other.call("GET", local(out["output"][0]["url"]), headers={"Accept": "application/fhir+ndjson"})
    _outcome(r, 403, "forbidden", "another client")
    _outcome(other.call("DELETE", status), 403, "forbidden", "another client")
    assert kicker.call("GET", status).status_code == 200


def test_error_file_is_the_owners_whatever_the_types(app: Any, fhir: FhirClient, seeded: Seeded) -> None:
    owner = _register(app)
    # A member that does not exist: written as a bulk load may, with REHABFHIR_REFERENTIAL_INTEGRITY off.
    settings = app.config["REHABFHIR_SETTINGS"]
    app.config["REHABFHIR_SETTINGS"] = dataclasses.replace(settings, referential_integrity=False)
    group = fhir.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": f"Patient/{seeded.a}"}},
                {"entity": {"reference": "Patient/gone"}},
            ],
        }
    )["id"]
    app.config["REHABFHIR_SETTINGS"] = settings
    kicker = _client(app, owner, "system/Group.rs system/Patient.rs")
    out = wait(kicker, kick_off(kicker, f"/Group/{group}/$export?_type=Patient"))
    narrow = _client(app, owner, "system/Group.rs")
    lines = download(narrow, out["error"][0]["url"])
    assert "Patient/gone" in orjson.loads(lines[0])["issue"][0]["diagnostics"]


# ------------------------------------------------------------------------- 3. `patient` parameter


def test_patient_parameter_restricts_patient_level_export(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), ALLOWED)
    r = _post(client, "/Patient/$export", _patient_param(seeded.a))
    assert r.status_code == 202, r.get_data(as_text=True)
    files = _files(client, wait(client, local(r.headers["Content-Location"])))
    assert _ids(files["Patient"]) == {seeded.a}
    assert _ids(files["Observation"]) == {seeded.obs["A.vital"], seeded.obs["A.lab"]}
    assert _ids(files["Group"]) == {seeded.group}  # Group.member puts it in A's compartment


def test_patient_parameter_may_repeat(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), ALLOWED)
    params = [*_patient_param(seeded.a, seeded.c), {"name": "_type", "valueString": "Patient,Observation"}]
    r = _post(client, "/Patient/$export", params)
    assert r.status_code == 202, r.get_data(as_text=True)
    files = _files(client, wait(client, local(r.headers["Content-Location"])))
    assert _ids(files["Patient"]) == {seeded.a, seeded.c}
    assert _ids(files["Observation"]) == {seeded.obs["A.vital"], seeded.obs["A.lab"], seeded.obs["C.vital"]}


def test_patient_parameter_intersects_group_members(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), ALLOWED)
    r = _post(client, f"/Group/{seeded.group}/$export", _patient_param(seeded.b))
    assert r.status_code == 202, r.get_data(as_text=True)
    files = _files(client, wait(client, local(r.headers["Content-Location"])))
    assert _ids(files["Patient"]) == {seeded.b}
    assert _ids(files["Observation"]) == {seeded.obs["B.vital"], seeded.obs["B.lab"]}


def test_patient_parameter_and_a_restricted_grant(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), f"system/Group.rs system/Patient.rs {VITALS}")
    r = _post(client, f"/Group/{seeded.group}/$export", _patient_param(seeded.a))
    files = _files(client, wait(client, local(r.headers["Content-Location"])))
    assert _ids(files["Observation"]) == {seeded.obs["A.vital"]}


@pytest.mark.parametrize(
    ("where", "param", "text"),
    [
        ("/$export", "A", "not applicable to a system-level export"),
        ("/Patient/$export", "nobody", "Patient/nobody is not known"),
        ("/Group/{group}/$export", "C", "is not a member of Group/"),
        ("/Group/{group}/$export", "nobody", "is not a member of Group/"),
        ("/Patient/$export", "Observation/1", "expected a reference Patient/[id]"),
        ("/Patient/$export", "string", "valueReference in a POSTed Parameters"),
    ],
    ids=["system-level", "unknown", "not-a-member", "unknown-in-group", "not-a-patient", "not-a-reference"],
)
def test_patient_parameter_errors(app: Any, seeded: Seeded, where: str, param: str, text: str) -> None:
    client = _client(app, _register(app), ALLOWED)
    path = where.format(group=seeded.group)
    if param == "string":
        parameters: list[dict[str, Any]] = [{"name": "patient", "valueString": f"Patient/{seeded.a}"}]
    elif "/" in param:
        parameters = [{"name": "patient", "valueReference": {"reference": param}}]
    else:
        parameters = _patient_param({"A": seeded.a, "C": seeded.c}.get(param, param))
    _outcome(_post(client, path, parameters), 400, "invalid", text)


def test_patient_query_parameter_is_refused(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), ALLOWED)
    r = client.call("GET", f"/Patient/$export?patient=Patient/{seeded.a}", headers=ASYNC)
    _outcome(r, 400, "invalid", "valueReference in a POSTed Parameters")


def test_patient_the_grant_cannot_see_is_not_known(app: Any, seeded: Seeded) -> None:
    client = _client(app, _register(app), "system/Patient.rs?gender=female system/Observation.rs")
    _outcome(_post(client, "/Patient/$export", _patient_param(seeded.b)), 400, "invalid", "is not known")
    r = _post(client, "/Patient/$export", _patient_param(seeded.a))
    assert r.status_code == 202, r.get_data(as_text=True)
