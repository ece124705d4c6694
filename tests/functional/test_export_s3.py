"""Bulk $export to an S3-compatible bucket (REHABFHIR_EXPORT_STORE=s3), on SQLite and PostgreSQL.

The bucket is moto's S3 server on loopback, reached over HTTP like MinIO or Ceph would be:
kick-off, status and each file's download through the server (the same bytes as the directory
store), refused downloads, expiry and cancel removing the objects, an unreachable endpoint
failing the job, and bad settings refused at start.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer

from server.bulk.config import BulkConfig
from server.bulk.store import S3Location
from server.bulk.store import s3_client
from server.settings import Settings
from server.settings import SettingsError
from server.store import jobs
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.conftest import free_port
from tests.functional.test_audit import events
from tests.functional.test_export import export_dir  # noqa: F401  (autouse: each test its own files)
from tests.functional.test_export import kick_off
from tests.functional.test_export import load
from tests.functional.test_export import local
from tests.functional.test_export import paused_worker
from tests.functional.test_export import wait
from tests.functional.test_export_access import _client
from tests.functional.test_export_access import _register

NDJSON = {"Accept": "application/fhir+ndjson"}
PREFIX = "exports"


@dataclass
class Bucket:
    client: Any
    name: str
    location: S3Location

    def keys(self) -> set[str]:
        answer = self.client.list_objects_v2(Bucket=self.name)
        return {item["Key"] for item in answer.get("Contents", ())}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Iterator[None]:
    """Credentials through boto3's standard chain (the environment), nothing from the machine's files."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    s3_client.cache_clear()
    yield
    s3_client.cache_clear()


@pytest.fixture
def bucket(app: Any, s3_endpoint: str, aws_chain: None) -> Iterator[Bucket]:
    """A fresh bucket; the app's export store is switched to it for the test."""
    name = f"rehab-{uuid.uuid4().hex[:12]}"
    location = S3Location(bucket=name, prefix=PREFIX, endpoint_url=s3_endpoint)
    client = s3_client(location)
    client.create_bucket(Bucket=name)
    config = app.extensions["rehabfhir.bulk"]
    config.s3, config.s3_attempts = location, 3
    try:
        yield Bucket(client, name, location)
    finally:
        config.s3, config.s3_attempts = None, 3


def raw(fhir: FhirClient, url: str) -> Any:
    """Download one file; the response (checked: 200, NDJSON)."""
    r = fhir.call("GET", local(url), headers=NDJSON)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("application/fhir+ndjson")
    return r


def _files(fhir: FhirClient, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Every output and error file of a manifest: type (errors: 'error') -> its bytes."""
    out = {o["type"]: raw(fhir, o["url"]).get_data() for o in manifest["output"]}
    out |= {"error:" + e["type"]: raw(fhir, e["url"]).get_data() for e in manifest["error"]}
    return out


def _staging(app: Any) -> pathlib.Path:
    """The directory files are staged in before their upload (REHABFHIR_EXPORT_DIR)."""
    return pathlib.Path(app.extensions["rehabfhir.bulk"].export_dir)


def _job_id(status_path: str) -> str:
    return status_path.rsplit("/", 1)[1]


def _seed(fhir: FhirClient) -> str:
    """Patients with Observations, a Practitioner, and a Group naming both (the error file); its id."""
    patients = load(fhir, [{"resourceType": "Patient", "name": [{"family": f"F{i}"}]} for i in range(40)])
    load(
        fhir,
        [
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"pain {i}"},
                "subject": {"reference": f"Patient/{patients[i % 40]['id']}"},
                "valueQuantity": {"value": i % 10, "unit": "score"},
            }
            for i in range(120)
        ],
    )
    doctor = fhir.create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
    members = [{"entity": {"reference": f"Patient/{p['id']}"}} for p in patients[:30]]
    members.append({"entity": {"reference": f"Practitioner/{doctor['id']}"}})  # not a patient: an error
    group = fhir.create({"resourceType": "Group", "type": "person", "actual": True, "member": members})
    return str(group["id"])


def test_bucket_export_serves_the_same_files_as_the_directory(
    app: Any, fhir: FhirClient, bucket: Bucket
) -> None:
    group = _seed(fhir)
    config = app.extensions["rehabfhir.bulk"]
    path = f"/Group/{group}/$export?_type=Patient,Observation"
    config.s3 = None  # the directory store (the default) first
    by_dir = wait(fhir, kick_off(fhir, path))
    dir_files = _files(fhir, by_dir)
    config.s3 = bucket.location
    status = kick_off(fhir, path)
    by_s3 = wait(fhir, status)
    job = _job_id(status)

    counts = {o["type"]: o["count"] for o in by_s3["output"]}
    assert counts == {o["type"]: o["count"] for o in by_dir["output"]} == {"Patient": 30, "Observation": 90}
    assert [e["count"] for e in by_s3["error"]] == [1]
    s3_files = _files(fhir, by_s3)
    assert s3_files == dir_files  # byte for byte, the error file too
    assert set(s3_files) == {"Patient", "Observation", "error:OperationOutcome"}
    # Complete objects under <prefix>/<job>/, no staging leftovers in the bucket or on disk.
    assert bucket.keys() == {
        f"{PREFIX}/{job}/Patient.ndjson",
        f"{PREFIX}/{job}/Observation.ndjson",
        f"{PREFIX}/{job}/OperationOutcome.error.ndjson",
    }
    head = bucket.client.head_object(Bucket=bucket.name, Key=f"{PREFIX}/{job}/Patient.ndjson")
    assert head["ContentType"] == "application/fhir+ndjson"
    assert head["ContentLength"] == len(s3_files["Patient"])
    assert _staging(app).is_dir() and not (_staging(app) / job).exists()  # staged there, then removed
    # The download streamed through the server, with the object's length.
    r = raw(fhir, by_s3["output"][0]["url"])
    assert r.is_streamed and int(r.headers["Content-Length"]) == len(r.get_data())


def test_bucket_downloads_are_decided_by_the_access_policy_and_audited(app: Any, bucket: Bucket) -> None:
    admin = FhirClient(app.test_client(), client_credentials_token(app))
    patient = admin.create({"resourceType": "Patient"})
    admin.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "pain"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
    )
    registered = _register(app, "system/*.rs")
    full = _client(app, registered, "system/*.rs")
    manifest = wait(full, kick_off(full, "/$export?_type=Patient,Observation"))
    urls = {o["type"]: local(o["url"]) for o in manifest["output"]}
    assert full.call("GET", urls["Patient"], headers=NDJSON).status_code == 200

    observations_only = _client(app, registered, "system/Observation.rs")
    r = observations_only.call("GET", urls["Patient"], headers=NDJSON)
    assert r.status_code == 403 and r.get_json()["resourceType"] == "OperationOutcome"
    assert observations_only.call("GET", urls["Observation"], headers=NDJSON).status_code == 200
    r = FhirClient(app.test_client(), token="").call("GET", urls["Patient"], headers=NDJSON)
    assert r.status_code == 401
    other_client = _client(app, _register(app, "system/*.rs"), "system/*.rs")
    assert other_client.call("GET", urls["Patient"], headers=NDJSON).status_code == 403

    downloads = [(r["action"], r["outcome"]) for r in events(app) if r["query"] == f"GET {urls['Patient']}"]
    assert downloads[0] == ("R", 0)  # the kick-off client's download
    assert len(downloads) == 4 and all(outcome != 0 for _, outcome in downloads[1:])  # the refusals


def test_expiry_and_cancel_remove_the_objects(app: Any, fhir: FhirClient, bucket: Bucket) -> None:
    fhir.create({"resourceType": "Patient"})
    expiring = kick_off(fhir, "/$export")
    wait(fhir, expiring)
    cancelled = kick_off(fhir, "/$export")
    manifest = wait(fhir, cancelled)
    assert {k.split("/")[1] for k in bucket.keys()} == {_job_id(expiring), _job_id(cancelled)}

    assert fhir.call("DELETE", cancelled).status_code == 202
    assert {k.split("/")[1] for k in bucket.keys()} == {_job_id(expiring)}
    assert fhir.call("GET", local(manifest["output"][0]["url"]), headers=NDJSON).status_code == 404

    with app.extensions["rehabfhir.engine"].begin() as conn:
        conn.execute(
            sa.update(jobs.ExportJob)
            .where(jobs.ExportJob.id == _job_id(expiring))
            .values(expires=jobs.now() - timedelta(seconds=1))
        )
    assert _job_id(expiring) in app.extensions["rehabfhir.export_worker"].cleanup()
    assert bucket.keys() == set()
    assert fhir.call("GET", expiring).status_code == 404


def test_a_job_run_again_starts_over_in_the_bucket(app: Any, fhir: FhirClient, bucket: Bucket) -> None:
    fhir.create({"resourceType": "Patient"})
    with paused_worker(app):
        status = kick_off(fhir, "/$export?_type=Patient")
        job = _job_id(status)
        # What an earlier, interrupted attempt of the same job left behind.
        stale = f"{PREFIX}/{job}/Observation.ndjson"
        bucket.client.put_object(Bucket=bucket.name, Key=stale, Body=b'{"resourceType":"Observation"}\n')
    wait(fhir, status)
    assert bucket.keys() == {f"{PREFIX}/{job}/Patient.ndjson"}


def test_an_unreachable_bucket_fails_the_job_and_answers_no_500(
    app: Any, fhir: FhirClient, bucket: Bucket
) -> None:
    fhir.create({"resourceType": "Patient"})
    config = app.extensions["rehabfhir.bulk"]
    done = kick_off(fhir, "/$export?_type=Patient")
    manifest = wait(fhir, done)  # completed while the bucket answered
    nowhere = S3Location(bucket=bucket.name, prefix=PREFIX, endpoint_url=f"http://127.0.0.1:{free_port()}")
    config.s3, config.s3_attempts = nowhere, 1

    status = kick_off(fhir, "/$export?_type=Patient")
    deadline = time.monotonic() + 60
    while (r := fhir.call("GET", status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    # The failed job's status answer (Bulk Data's error status: 5xx with an OperationOutcome).
    outcome = r.get_json()
    assert r.status_code == 500 and outcome["resourceType"] == "OperationOutcome"
    assert "export storage (S3 bucket) could not be reached" in outcome["issue"][0]["diagnostics"]
    assert "127.0.0.1" not in outcome["issue"][0]["diagnostics"]  # no endpoint details for clients
    assert not (_staging(app) / _job_id(status)).exists()  # the staging files are gone

    # The completed job: its status still answers; its download is a 503 outcome, not a 500.
    assert fhir.call("GET", done).status_code == 200
    r = fhir.call("GET", local(manifest["output"][0]["url"]), headers=NDJSON)
    assert r.status_code == 503 and r.get_json()["issue"][0]["code"] == "transient"
    # A cancel answers 202 though its objects stay; the next cleanup after the bucket is back removes them.
    assert fhir.call("DELETE", done).status_code == 202
    assert app.extensions["rehabfhir.export_worker"].cleanup() == []  # kept for the next try
    config.s3, config.s3_attempts = bucket.location, 3
    assert _job_id(done) in app.extensions["rehabfhir.export_worker"].cleanup()
    assert bucket.keys() == set()


def test_bad_store_settings_are_refused_at_start(tmp_path: pathlib.Path) -> None:
    env = {"DATABASE_URL": "sqlite://"}
    with pytest.raises(SettingsError, match="REHABFHIR_EXPORT_S3_BUCKET"):
        Settings.from_env({**env, "REHABFHIR_EXPORT_STORE": "s3"})
    with pytest.raises(SettingsError, match="REHABFHIR_EXPORT_STORE must be dir or s3"):
        Settings.from_env({**env, "REHABFHIR_EXPORT_STORE": "bucket"})
    with pytest.raises(SettingsError, match="REHABFHIR_EXPORT_S3_ENDPOINT_URL must be an http"):
        Settings.from_env(
            {
                **env,
                "REHABFHIR_EXPORT_STORE": "s3",
                "REHABFHIR_EXPORT_S3_BUCKET": "b",
                "REHABFHIR_EXPORT_S3_ENDPOINT_URL": "minio:9000",
            }
        )
    good = Settings.from_env(
        {
            **env,
            "REHABFHIR_EXPORT_STORE": "s3",
            "REHABFHIR_EXPORT_S3_BUCKET": "clinic-exports",
            "REHABFHIR_EXPORT_S3_PREFIX": "/rehab/",
            "REHABFHIR_EXPORT_S3_ENDPOINT_URL": "http://minio.internal:9000",
        }
    )
    s3 = BulkConfig.from_settings(good).s3
    assert s3 == S3Location("clinic-exports", "/rehab/", "http://minio.internal:9000")
    assert s3.key_prefix == "rehab/"
    assert BulkConfig.from_settings(Settings(database_url="sqlite://")).s3 is None  # the directory

    # The server itself stops before it opens the database, with the message.
    database = tmp_path / "never.db"
    started = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())],
        env=dict(os.environ, DATABASE_URL=f"sqlite:///{database}", REHABFHIR_EXPORT_STORE="s3"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "REHABFHIR_EXPORT_STORE=s3 needs REHABFHIR_EXPORT_S3_BUCKET" in started.stderr
    assert not database.exists()
