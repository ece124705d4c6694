"""Bulk Data $export: kick-off, polling, manifest, download, cancel, errors, expiry, restart survival."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
import requests
import sqlalchemy as sa

from server.bulk.worker import ExportWorker
from server.store import jobs
from tests.conftest import FhirClient
from tests.conftest import register_client
from tests.conftest import running_server
from tests.conftest import token_for

BASE = "http://testserver/fhir"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(autouse=True)
def export_dir(app: Any, tmp_path: Any) -> Iterator[Any]:
    """Each test writes its export files to its own directory."""
    config = app.extensions["rehabfhir.bulk"]
    old = config.export_dir
    config.export_dir = str(tmp_path / "export")
    yield tmp_path / "export"
    config.export_dir = old


@contextlib.contextmanager
def paused_worker(app: Any) -> Iterator[None]:
    """Stop the app's export worker for the block; start a fresh one after it."""
    app.extensions["rehabfhir.export_worker"].stop()
    time.sleep(0.05)
    try:
        yield
    finally:
        worker = ExportWorker(app.extensions["rehabfhir.sessions"], app.extensions["rehabfhir.bulk"])
        app.extensions["rehabfhir.export_worker"] = worker
        worker.start()


def local(url: str) -> str:
    assert url.startswith(BASE + "/"), url
    return url[len(BASE) :]


def kick_off(fhir: FhirClient, path: str) -> str:
    r = fhir.call("GET", path, headers=ASYNC)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.headers["Content-Location"].startswith(f"{BASE}/bulk/status/")
    return local(r.headers["Content-Location"])


def wait(fhir: FhirClient, status_path: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = fhir.call("GET", status_path, headers={"Accept": "application/json"})
        if r.status_code != 202:
            assert r.status_code == 200, r.get_data(as_text=True)
            assert r.headers["Content-Type"].startswith("application/json")
            return r.get_json()  # type: ignore[no-any-return]
        assert r.headers["X-Progress"] and r.headers["Retry-After"]
        time.sleep(0.1)
    raise AssertionError("export did not finish")


def download(fhir: FhirClient, url: str) -> list[str]:
    r = fhir.call("GET", local(url), headers={"Accept": "application/fhir+ndjson"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("application/fhir+ndjson")
    return r.get_data(as_text=True).splitlines()


def load(fhir: FhirClient, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create resources through 500-entry transactions; return the stored ones."""
    stored = []
    for start in range(0, len(resources), 500):
        entries = [
            {
                "fullUrl": f"urn:uuid:{start + i:08d}-0000-0000-0000-000000000000",
                "resource": res,
                "request": {"method": "POST", "url": res["resourceType"]},
            }
            for i, res in enumerate(resources[start : start + 500])
        ]
        r = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        stored += [e["resource"] for e in r.get_json()["entry"]]
    return stored


def test_export_of_thousands_read_back_line_by_line(fhir: FhirClient) -> None:
    patients = load(
        fhir,
        [{"resourceType": "Patient", "name": [{"family": f"F{i}"}], "gender": "female"} for i in range(500)],
    )
    observations = load(
        fhir,
        [
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"pain {i}"},
                "subject": {"reference": f"Patient/{patients[i % 500]['id']}"},
                "valueQuantity": {"value": i % 10, "unit": "score"},
            }
            for i in range(2500)
        ],
    )
    status = kick_off(fhir, "/$export?_type=Patient,Observation")
    out = wait(fhir, status)
    assert out["requiresAccessToken"] is True
    assert out["request"] == f"{BASE}/$export?_type=Patient%2CObservation"
    assert out["error"] == []
    assert out["transactionTime"].endswith("Z")
    by_type = {o["type"]: o for o in out["output"]}
    assert {t: o["count"] for t, o in by_type.items()} == {"Patient": 500, "Observation": 2500}
    for type_, stored in (("Patient", patients), ("Observation", observations)):
        lines = download(fhir, by_type[type_]["url"])
        assert len(lines) == len(stored)
        expected = {r["id"]: r for r in stored}
        for line in lines:
            resource = orjson.loads(line)
            assert resource == expected.pop(resource["id"])
        assert not expected


def test_patient_and_group_level_with_filters(app: Any, fhir: FhirClient) -> None:
    a = fhir.create({"resourceType": "Patient", "name": [{"family": "A"}]})
    b = fhir.create({"resourceType": "Patient", "name": [{"family": "B"}]})
    fhir.create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
    for pat, codes in ((a, ("final", "preliminary")), (b, ("final",))):
        for code in codes:
            fhir.create(
                {
                    "resourceType": "Observation",
                    "status": code,
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{pat['id']}"},
                }
            )
    out = wait(fhir, kick_off(fhir, "/Patient/$export"))
    counts = {o["type"]: o["count"] for o in out["output"]}
    assert counts == {"Patient": 2, "Observation": 3}  # no Practitioner: not in a Patient compartment
    out = wait(
        fhir, kick_off(fhir, "/Patient/$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal")
    )
    assert [(o["type"], o["count"]) for o in out["output"]] == [("Observation", 2)]
    # A member that does not exist: written as a bulk load may, with REHABFHIR_REFERENTIAL_INTEGRITY off.
    settings = app.config["REHABFHIR_SETTINGS"]
    app.config["REHABFHIR_SETTINGS"] = dataclasses.replace(settings, referential_integrity=False)
    group = fhir.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "name": "Caseload",
            "member": [
                {"entity": {"reference": f"Patient/{a['id']}"}},
                {"entity": {"reference": "Patient/ghost"}},
            ],
        }
    )
    app.config["REHABFHIR_SETTINGS"] = settings
    out = wait(fhir, kick_off(fhir, f"/Group/{group['id']}/$export?_outputFormat=application/fhir%2Bndjson"))
    counts = {o["type"]: o["count"] for o in out["output"]}
    assert counts == {"Patient": 1, "Observation": 2, "Group": 1}  # Group.member puts it in the compartment
    patient_file = next(o["url"] for o in out["output"] if o["type"] == "Patient")
    assert [orjson.loads(x)["id"] for x in download(fhir, patient_file)] == [a["id"]]
    assert [e["type"] for e in out["error"]] == ["OperationOutcome"]
    errors = [orjson.loads(x) for x in download(fhir, out["error"][0]["url"])]
    assert errors[0]["resourceType"] == "OperationOutcome"
    assert "Patient/ghost" in errors[0]["issue"][0]["diagnostics"]


def test_since_only_exports_later_changes(fhir: FhirClient) -> None:
    fhir.create({"resourceType": "Patient", "name": [{"family": "Old"}]})
    time.sleep(0.01)
    new = fhir.create({"resourceType": "Patient", "name": [{"family": "New"}]})
    since = new["meta"]["lastUpdated"].replace("+", "%2B")
    out = wait(fhir, kick_off(fhir, f"/$export?_type=Patient&_since={since}"))
    lines = download(fhir, out["output"][0]["url"])
    assert [orjson.loads(x)["id"] for x in lines] == [new["id"]]


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/$export", {}, 400, "respond-async"),
        ("/$export?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
        ("/$export?_type=Nope", ASYNC, 400, "_type"),
        ("/$export?_typeFilter=Observation%3Fbogus%3D1", ASYNC, 400, "bogus"),
        ("/$export?_typeFilter=Observation", ASYNC, 400, "_typeFilter"),
        ("/$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal", ASYNC, 400, "_type"),
        ("/$export?_since=soon", ASYNC, 400, "_since"),
        ("/$export?_elements=id", ASYNC, 400, "_elements"),
        ("/Group/none/$export", ASYNC, 404, "Group/none"),
        ("/Observation/$export", ASYNC, 404, "export"),
    ],
    ids=[
        "no-prefer",
        "format",
        "type",
        "filter-param",
        "filter-shape",
        "filter-type",
        "since",
        "elements",
        "group",
        "type-level",
    ],
)
def test_kick_off_errors(
    fhir: FhirClient, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    r = fhir.call("GET", path, headers=headers)
    assert r.status_code == status, r.get_data(as_text=True)
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome" and text in oo["issue"][0]["diagnostics"]


def test_accept_must_be_json(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/$export", headers={**ASYNC, "Accept": "application/xml"})
    assert r.status_code == 406


def test_progress_then_cancel(app: Any, fhir: FhirClient, export_dir: Any) -> None:
    fhir.create({"resourceType": "Patient"})
    with paused_worker(app):
        status = kick_off(fhir, "/$export")
        r = fhir.call("GET", status)
        assert (
            r.status_code == 202 and r.headers["X-Progress"] == "queued" and r.headers["Retry-After"] == "1"
        )
        assert r.get_data() == b""
        assert fhir.call("DELETE", status).status_code == 202
        assert fhir.call("GET", status).status_code == 404
        assert fhir.call("DELETE", status).status_code == 404
    # The fresh worker must not run the cancelled job.
    time.sleep(0.5)
    assert not export_dir.exists() or not any(export_dir.iterdir())


def test_cancel_completed_removes_files(fhir: FhirClient, export_dir: Any) -> None:
    fhir.create({"resourceType": "Patient"})
    status = kick_off(fhir, "/$export")
    out = wait(fhir, status)
    job_id = status.rsplit("/", 1)[1]
    assert (export_dir / job_id / "Patient.ndjson").is_file()
    assert fhir.call("DELETE", status).status_code == 202
    assert not (export_dir / job_id).exists()
    r = fhir.call("GET", local(out["output"][0]["url"]))
    assert r.status_code == 404 and r.get_json()["resourceType"] == "OperationOutcome"


def test_files_only_for_the_client_that_asked(app: Any, fhir: FhirClient) -> None:
    fhir.create({"resourceType": "Patient"})
    status = kick_off(fhir, "/$export")
    out = wait(fhir, status)
    engine = app.extensions["rehabfhir.engine"]
    with engine.begin() as conn:
        conn.execute(sa.update(jobs.ExportJob).values(client_id="someone-else"))
    r = fhir.call("GET", local(out["output"][0]["url"]))
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert fhir.call("GET", status).status_code == 403
    assert (
        fhir.call("GET", local(out["output"][0]["url"]).replace("Patient.ndjson", "../../x")).status_code
        == 404
    )


def test_expired_files_are_cleaned(app: Any, fhir: FhirClient, export_dir: Any) -> None:
    fhir.create({"resourceType": "Patient"})
    status = kick_off(fhir, "/$export")
    wait(fhir, status)
    job_id = status.rsplit("/", 1)[1]
    with app.extensions["rehabfhir.engine"].begin() as conn:
        conn.execute(sa.update(jobs.ExportJob).values(expires=jobs.now() - timedelta(seconds=1)))
    assert job_id in app.extensions["rehabfhir.export_worker"].cleanup()
    assert not (export_dir / job_id).exists()
    assert fhir.call("GET", status).status_code == 404


def test_failed_job_answers_an_outcome(app: Any, fhir: FhirClient) -> None:
    group = fhir.create({"resourceType": "Group", "type": "person", "actual": True})
    with paused_worker(app):
        status = kick_off(fhir, f"/Group/{group['id']}/$export")
        fhir.call("DELETE", f"/Group/{group['id']}")
    deadline = time.monotonic() + 30
    while (r := fhir.call("GET", status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 500
    assert "no longer exists" in r.get_json()["issue"][0]["diagnostics"]


def test_stale_job_is_reclaimed_and_skip_locked(app: Any, fhir: FhirClient) -> None:
    fhir.create({"resourceType": "Patient"})
    factory = app.extensions["rehabfhir.sessions"]
    with paused_worker(app):
        first = kick_off(fhir, "/$export").rsplit("/", 1)[1]
        second = kick_off(fhir, "/$export").rsplit("/", 1)[1]
        with factory() as s:
            claimed = jobs.claim(s, "dead-worker", timedelta(seconds=120))
        assert claimed is not None and claimed.id == first
        if app.extensions["rehabfhir.engine"].dialect.name == "postgresql":
            # A row locked by one claimer is skipped by the next: it gets the second job.
            with factory() as holder, factory() as other:
                holder.execute(sa.select(jobs.ExportJob).where(jobs.ExportJob.id == second).with_for_update())
                assert jobs.claim(other, "w2", timedelta(seconds=120)) is None
                holder.rollback()
        with factory() as s:
            # The dead worker's heartbeat is old: a live worker takes the job over.
            s.execute(
                sa.update(jobs.ExportJob)
                .where(jobs.ExportJob.id == first)
                .values(heartbeat=jobs.now() - timedelta(seconds=600))
            )
            s.commit()
    out = wait(fhir, f"/bulk/status/{first}")
    assert out["output"][0]["count"] == 1
    assert wait(fhir, f"/bulk/status/{second}")["output"][0]["count"] == 1


def test_job_survives_a_restart(app: Any, database_url: str, tmp_path: Any) -> None:
    with paused_worker(app):  # only the servers' workers may run the job
        _restart_flow(database_url, tmp_path)


def _restart_flow(database_url: str, tmp_path: Any) -> None:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    env = {"REHABFHIR_EXPORT_DIR": str(tmp_path / "files"), "REHABFHIR_EXPORT_WORKER": "0"}
    client = register_client(database_url)
    with running_server(database_url, workers=1, env=env) as base:
        headers["Authorization"] = "Bearer " + token_for(base, database_url, client=client)
        for i in range(30):
            r = requests.post(
                f"{base}/Patient",
                json={"resourceType": "Patient", "name": [{"family": f"R{i}"}]},
                headers=headers,
                timeout=30,
            )
            assert r.status_code == 201
        r = requests.get(f"{base}/Patient/$export?_type=Patient", headers={**headers, **ASYNC}, timeout=30)
        assert r.status_code == 202
        status_path = r.headers["Content-Location"][len(base) :]
        r = requests.get(base + status_path, headers=headers, timeout=30)
        assert r.status_code == 202 and r.headers["X-Progress"] == "queued"
    env["REHABFHIR_EXPORT_WORKER"] = "1"
    with running_server(database_url, workers=2, env=env) as base:
        headers["Authorization"] = "Bearer " + token_for(base, database_url, client=client)
        deadline = time.monotonic() + 60
        while (r := requests.get(base + status_path, headers=headers, timeout=30)).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["output"][0]["count"] == 30
        f = requests.get(
            out["output"][0]["url"],
            timeout=30,
            headers={"Accept": "application/fhir+ndjson", "Authorization": headers["Authorization"]},
        )
        assert f.status_code == 200 and f.headers["Content-Type"].startswith("application/fhir+ndjson")
        assert sorted(orjson.loads(x)["name"][0]["family"] for x in f.text.splitlines()) == sorted(
            f"R{i}" for i in range(30)
        )
        assert requests.delete(base + status_path, headers=headers, timeout=30).status_code == 202


def test_capability_statement_declares_the_operations(fhir: FhirClient) -> None:
    statement = fhir.call("GET", "/metadata").get_json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    assert {
        "name": "export",
        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    } in rest["operation"]
    ops = {e["type"]: {o["name"] for o in e.get("operation", [])} for e in rest["resource"]}
    assert {"export", "everything", "validate"} <= ops["Patient"]
    assert {"export", "validate"} <= ops["Group"]
    assert ops["Observation"] >= {"validate"} and "export" not in ops["Observation"]
