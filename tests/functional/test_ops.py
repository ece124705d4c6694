"""Health, readiness, metrics and request logs: who may call them, what they say, what they never say."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from server import create_app
from server.api.ops_routes import JsonFormatter
from server.audit import chain
from server.settings import Settings
from tests.conftest import as_owner
from tests.conftest import client_credentials_token
from tests.conftest import spawn_server
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code


def _audit_rows(app: Any) -> int:
    with app.extensions["rehabfhir.engine"].connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one())


def _user_token(app: Any) -> str:
    scope = "openid fhirUser user/Patient.rs"
    add_user(app, "clin", "practitioner", "Practitioner/pt1")
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    code = get_code(c, authorize_params(client_id, scope, verifier), "clin")["code"]
    return str(exchange(c, client_id, code, verifier).get_json()["access_token"])


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/favicon.ico"])
def test_open_endpoints_need_no_token_and_are_not_audited(app: Any, path: str) -> None:
    before = _audit_rows(app)
    r = app.test_client().get(path)
    assert r.status_code == (404 if path == "/favicon.ico" else 200), r.get_data(as_text=True)
    assert _audit_rows(app) == before


def test_readyz_checks_database_migrations_and_export_worker(app: Any) -> None:
    r = app.test_client().get("/readyz")
    assert r.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "export_worker": "ok", "export_dir": "ok"},
    }


def test_readyz_is_503_while_migrations_are_behind(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.store import migrate

    migrate.missing_heads(app.extensions["rehabfhir.engine"])  # reads the scripts' heads once
    monkeypatch.setattr(migrate, "_script_heads", migrate._script_heads | {"zz_future"})
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["checks"] == {
        "database": "ok",
        "migrations": "behind: zz_future",
        "export_worker": "ok",
        "export_dir": "ok",
    }
    assert app.test_client().get("/healthz").status_code == 200  # the process itself is up


def test_readyz_is_503_when_the_database_is_unreachable(
    app: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = sa.create_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    monkeypatch.setitem(app.extensions, "rehabfhir.engine", gone)
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["checks"]["database"] == "unreachable"
    gone.dispose()


def test_readyz_is_503_when_the_export_worker_stopped(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.extensions["rehabfhir.export_worker"], "alive", lambda: False)
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["checks"]["export_worker"] == "stopped"


def test_readyz_is_503_when_the_export_dir_is_not_writable(
    app: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = app.extensions["rehabfhir.bulk"]
    monkeypatch.setattr(config, "export_dir", str(tmp_path / "not-yet" / "export"))
    assert app.test_client().get("/readyz").get_json()["checks"]["export_dir"] == "ok"  # creatable
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(config, "export_dir", str(locked / "export"))
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(locked))  # tests may run as root
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["checks"]["export_dir"] == "not writable"


def test_metrics_needs_a_backend_token(app: Any) -> None:
    c = app.test_client()
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers=bearer("not-a-token")).status_code == 401
    r = c.get("/metrics", headers=bearer(_user_token(app)))  # a person's token, even a valid one
    assert r.status_code == 403
    assert "system/" in r.get_json()["issue"][0]["diagnostics"]


def test_metrics_count_requests_by_interaction_and_status(app: Any, fhir: Any) -> None:
    pid = fhir.create({"resourceType": "Patient"})["id"]
    assert fhir.call("GET", f"/Patient/{pid}").status_code == 200
    assert fhir.call("GET", "/Patient/nope").status_code == 404
    token = client_credentials_token(app)
    before = _audit_rows(app)
    r = app.test_client().get("/metrics", headers=bearer(token))
    assert r.status_code == 200
    assert _audit_rows(app) == before  # /metrics is not a FHIR interaction: not audited
    assert r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert 'rehabfhir_http_request_duration_seconds_count{interaction="read",status="200"}' in text
    assert 'rehabfhir_http_request_duration_seconds_count{interaction="read",status="404"}' in text
    assert (
        'rehabfhir_http_request_duration_seconds_bucket{interaction="create",le="0.005",status="201"}' in text
    )
    assert 'rehabfhir_db_pool_connections{state="checked_out"}' in text
    assert "rehabfhir_export_worker_up 1.0" in text
    assert "# TYPE rehabfhir_export_jobs gauge" in text
    assert pid not in text  # ids never become labels


def _metric(text: str, name: str) -> float:
    (line,) = [row for row in text.splitlines() if row.split(" ")[0] == name]
    return float(line.split(" ")[1])


def test_metrics_show_the_audit_backlog(app: Any, fhir: Any) -> None:
    token = client_credentials_token(app)
    fhir.create({"resourceType": "Patient"})  # its records are linked before it is answered
    text = app.test_client().get("/metrics", headers=bearer(token)).get_data(as_text=True)
    assert _metric(text, "rehabfhir_audit_pending_rows") == 0
    assert _metric(text, "rehabfhir_audit_chain_lag_seconds") == 0
    assert _metric(text, "rehabfhir_audit_queue_requests") == 0
    assert "# TYPE rehabfhir_audit_batches_total counter" in text  # it only counts up
    assert _metric(text, "rehabfhir_audit_batches_total") >= 1
    assert _metric(text, "rehabfhir_audit_records_total") >= 1
    # A committed write whose records were not linked (a crash between commit and link), 30 s ago.
    # Its MAC is not valid, so the head timer leaves it where it is while the test looks.
    row = {"pk": 7, "created": chain.now() - timedelta(seconds=30), "records": "[]", "mac": "0" * 64}
    with as_owner(app.extensions["rehabfhir.engine"]) as conn:
        conn.execute(
            sa.text("INSERT INTO audit_pending VALUES (:pk, :created, :records, :mac, :key_id)"),
            {**row, "key_id": "k"},
        )
    text = app.test_client().get("/metrics", headers=bearer(token)).get_data(as_text=True)
    assert _metric(text, "rehabfhir_audit_pending_rows") == 1
    assert 30 <= _metric(text, "rehabfhir_audit_chain_lag_seconds") < 300


def test_metrics_open_by_setting(tmp_path: pathlib.Path) -> None:
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path}/m.db", testing=True, metrics_open=True, export_worker=False
        )
    )
    try:
        r = app.test_client().get("/metrics")
        assert r.status_code == 200
        assert "rehabfhir_export_worker_up 0.0" in r.get_data(as_text=True)
    finally:
        app.extensions["rehabfhir.engine"].dispose()


def test_each_request_logs_one_json_line_without_content_or_names(
    app: Any, fhir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fhir.create({"resourceType": "Patient", "name": [{"family": "Lovelace", "given": ["Ada"]}]})
    with caplog.at_level(logging.INFO, logger="rehabfhir.request"):
        r = fhir.call("GET", "/Patient?family=Lovelace", headers={"X-Request-Id": "probe-42"})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "probe-42"
    records = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "probe-42"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    entry = json.loads(line)
    assert entry["request_id"] == "probe-42"
    assert entry["interaction"] == "search-type" and entry["status"] == 200
    assert entry["route"] == "/<type_>" and entry["resource_type"] == "Patient"
    assert entry["client_id"] and entry["duration_ms"] >= 0
    assert "Lovelace" not in line and "Ada" not in line and "family" not in line


def test_a_made_up_request_id_is_replaced(app: Any) -> None:
    r = app.test_client().get("/healthz", headers={"X-Request-Id": "bad id!"})
    assert r.headers["X-Request-Id"] != "bad id!" and len(r.headers["X-Request-Id"]) == 32


@pytest.mark.server
def test_serve_writes_only_json_lines_gunicorn_s_too(tmp_path: pathlib.Path) -> None:
    import urllib.request

    out = tmp_path / "serve.log"
    env = {"REHABFHIR_LOG_FORMAT": "json", "REHABFHIR_LOG_LEVEL": "INFO"}
    with out.open("wb") as sink:
        proc, base = spawn_server(f"sqlite:///{tmp_path}/serve.db", 1, env, output=sink)
        try:
            assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        finally:
            proc.terminate()
            proc.wait(20)
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    by_logger: dict[str, list[str]] = {}
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        by_logger.setdefault(entry["logger"], []).append(entry["message"])
    gunicorn = by_logger.get("gunicorn.error", [])
    assert any(m.startswith("Starting gunicorn") for m in gunicorn), by_logger
    assert any(m.startswith("Booting worker") for m in gunicorn), by_logger
    assert any(m.startswith("Handling signal") or "Shutting down" in m for m in gunicorn), by_logger
    assert any(m.startswith("rehabfhir serving FHIR R4B at") for m in by_logger.get("rehabfhir.serve", []))
    assert "request" in by_logger.get("rehabfhir.request", [])  # the app's own line for /healthz


def test_gunicorn_logs_in_the_configured_format() -> None:
    import io
    import logging as std_logging

    from gunicorn.config import Config

    from server.cli import gunicorn_logger_class

    for fmt, is_json in (("json", True), ("text", False)):
        cfg = Config()
        logger = gunicorn_logger_class(Settings(log_format=fmt, testing=True))(cfg)
        (handler,) = logger.error_log.handlers
        stream = io.StringIO()
        handler.setStream(stream)
        logger.info("Listening at: %s", "http://127.0.0.1:1")
        line = stream.getvalue().strip()
        if is_json:
            assert json.loads(line)["message"] == "Listening at: http://127.0.0.1:1"
        else:
            assert line.endswith("Listening at: http://127.0.0.1:1") and not line.startswith("{")
        assert isinstance(handler, std_logging.StreamHandler)
