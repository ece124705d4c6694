"""The export worker streams stored bodies a batch at a time and writes them as stored (issue 15 item 5)."""

from __future__ import annotations

import pathlib
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from server.bulk import worker as bulk_worker
from server.bulk.config import BulkConfig
from server.bulk.worker import ExportWorker
from server.fhir.operations.export import ExportRequest
from server.store import exporting
from server.store import jobs
from tests.conftest import FhirClient
from tests.functional.test_export import paused_worker


def _request(scopes: str) -> ExportRequest:
    return ExportRequest(
        level="system",
        types=("Patient",),
        type_filters=(),
        since=None,
        output_format="application/fhir+ndjson",
        request_url="http://testserver/fhir/$export",
        base_url="http://testserver/fhir",
        client_id=None,
        scopes=scopes,
    )


def _export(app: Any, tmp_path: pathlib.Path, scopes: str) -> tuple[jobs.JobView, list[str]]:
    factory = app.extensions["rehabfhir.sessions"]
    with factory() as session:
        job_id = jobs.submit(session, _request(scopes))
    with paused_worker(app):
        assert ExportWorker(factory, BulkConfig(export_dir=str(tmp_path), worker=False)).run_once()
    with factory() as session:
        job = jobs.get(session, job_id)
    assert job is not None and job.status == jobs.COMPLETED, job
    path = tmp_path / job_id / "Patient.ndjson"
    return job, path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def patients(fhir: FhirClient) -> list[str]:
    ids = []
    for n in range(7):
        gender = "female" if n % 2 else "male"
        r = fhir.call(
            "POST", "/Patient", {"resourceType": "Patient", "gender": gender, "name": [{"family": f"S{n}"}]}
        )
        assert r.status_code == 201, r.get_data(as_text=True)
        ids.append(r.get_json()["id"])
    return ids


def test_batches_cross_partitions_and_lines_are_the_stored_bodies_in_order(
    app: Any, patients: list[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporting, "BATCH", 3)

    def judged(*args: Any) -> bool:
        raise AssertionError("an unconfined grant must not judge (or parse) each resource")

    monkeypatch.setattr(bulk_worker, "permits", judged)
    with app.extensions["rehabfhir.sessions"]() as session:
        batches = list(exporting.stream_batches(session, "Patient", until=jobs.now()))
        stored = session.scalars(
            sa.text("SELECT body FROM resource WHERE type = 'Patient' AND NOT deleted ORDER BY pk")
        ).all()
    assert [len(b) for b in batches] == [3, 3, 1]
    job, lines = _export(app, tmp_path, "system/*.rs")
    assert lines == list(stored)  # byte for byte, in pk order, no model built
    assert job.output == [{"type": "Patient", "file": "Patient.ndjson", "count": 7}]


def test_a_confined_grant_still_judges_every_resource(
    app: Any, patients: list[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporting, "BATCH", 2)
    job, lines = _export(app, tmp_path, "system/Patient.rs?gender=female")
    assert {orjson.loads(line)["gender"] for line in lines} == {"female"}
    assert len(lines) == 3 and job.output[0]["count"] == 3
