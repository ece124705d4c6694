"""No 500 from input: out-of-range numbers, NUL characters, lost databases, reason phrases, fuzz.

Every case runs on SQLite and on PostgreSQL. A request refused here is still audited.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import pathlib
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from server import create_app
from server.settings import Settings
from server.store.repository import SqlRepository
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.conftest import fresh_postgres
from tests.conftest import running_server
from tests.conftest import token_for
from tests.conftest import witness_path

BIG = "9223372036854775808"  # 2**63: one more than a BIGINT holds
SUPERSCRIPT_TWO = "%C2%B2"  # "²": str.isdigit() says yes, int() says no
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng"}]}


def outcome(resp: Any, status: int, code: str) -> dict[str, Any]:
    """Assert an OperationOutcome with this status and first issue code; return its first issue."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"][0]["code"] == code, body
    return body["issue"][0]  # type: ignore[no-any-return]


def audit_rows(app: Any) -> list[dict[str, Any]]:
    """The request audit rows (sign-in and token events left out), oldest first."""
    with app.extensions["rehabfhir.engine"].connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT subtype, outcome, resource, query FROM audit_event WHERE type <> '110114' ORDER BY pk"
            )
        )
        return [dict(r) for r in rows.mappings()]


@pytest.fixture
def p1(fhir: FhirClient) -> dict[str, Any]:
    r = fhir.call("PUT", "/Patient/p1", PATIENT)
    assert r.status_code == 201
    return r.get_json()  # type: ignore[no-any-return]


# -- out-of-range integers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expression"),
    [
        (f"/Patient?_offset={BIG}", "_offset"),
        ("/Patient?_offset=" + "9" * 5000, "_offset"),
        (f"/Patient?_offset={SUPERSCRIPT_TWO}", "_offset"),
        (f"/Patient?_count={SUPERSCRIPT_TWO}", "_count"),
        (f"/Patient/p1/_history?_cursor={BIG}", "_cursor"),
        (f"/Patient/_history?_cursor={BIG}", "_cursor"),
        ("/_history?_cursor=99999999999999999999999", "_cursor"),
        (f"/Patient/p1/$everything?_cursor={BIG}", "_cursor"),
        (f"/AuditEvent?_offset={BIG}", "_offset"),
        (f"/AuditEvent?_count={SUPERSCRIPT_TWO}", "_count"),
        ("/RiskAssessment?probability=1e99999999999", "probability"),
        ("/RiskAssessment?probability=1e-17000", "probability"),
        ("/Observation?value-quantity=1e200000", "value-quantity"),
        ("/Observation?value-quantity=1" + "0" * 1200, "value-quantity"),
    ],
    ids=[
        "search-offset-2^63",
        "search-offset-5000-digits",
        "search-offset-superscript",
        "search-count-superscript",
        "instance-history-cursor",
        "type-history-cursor",
        "system-history-cursor",
        "everything-cursor",
        "auditevent-offset",
        "auditevent-count-superscript",
        "number-exponent-huge",
        "number-exponent-tiny",
        "quantity-exponent-huge",
        "quantity-1200-digits",
    ],
)
def test_out_of_range_integer_is_400_with_expression(
    fhir: FhirClient, p1: dict[str, Any], path: str, expression: str
) -> None:
    issue = outcome(fhir.call("GET", path), 400, "invalid")
    assert issue["expression"] == [expression]


def _cursor(values: list[Any], pk: Any) -> str:
    # json, not orjson: the point is numbers orjson would not write
    return base64.urlsafe_b64encode(json.dumps({"v": values, "p": pk}).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "values", "pk"),
    [
        ("_id", [], 2**63),
        ("_id", [], 10**30),
        ("_id", [], -1),
        ("_id", [7], 1),
        ("_id", ["a\x00"], 1),
        ("_lastUpdated", ["not an instant"], 1),
    ],
    ids=["pk-2^63", "pk-10^30", "pk-negative", "value-not-text", "value-nul", "value-not-instant"],
)
def test_altered_search_cursor_is_400(
    fhir: FhirClient, p1: dict[str, Any], sort: str, values: list[Any], pk: Any
) -> None:
    r = fhir.call("GET", f"/Patient?_sort={sort}&_cursor={_cursor(values, pk)}")
    assert outcome(r, 400, "invalid")["expression"] == ["_cursor"]


@pytest.mark.parametrize(
    "vid", ["99999999999999999999999", BIG, str(2**31)], ids=["23-digits", "2^63", "2^31"]
)
def test_vread_of_a_version_that_cannot_exist_is_404(fhir: FhirClient, p1: dict[str, Any], vid: str) -> None:
    outcome(fhir.call("GET", f"/Patient/p1/_history/{vid}"), 404, "not-found")


@pytest.mark.parametrize(
    "path",
    [
        f"/Patient/p1/_history?_cursor={SUPERSCRIPT_TWO}",
        f"/_history?_cursor={SUPERSCRIPT_TWO}",
        f"/Patient/p1/$everything?_cursor={SUPERSCRIPT_TWO}",
    ],
    ids=["instance-history", "system-history", "everything"],
)
def test_cursor_of_non_ascii_digits_is_400(fhir: FhirClient, p1: dict[str, Any], path: str) -> None:
    assert "_cursor" in outcome(fhir.call("GET", path), 400, "invalid")["diagnostics"]


def test_vread_of_non_ascii_digits_is_404(fhir: FhirClient, p1: dict[str, Any]) -> None:
    outcome(fhir.call("GET", f"/Patient/p1/_history/{SUPERSCRIPT_TWO}"), 404, "not-found")


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/Patient?birthdate=ap9999", []),
        ("/Patient?birthdate=ap0001", []),
        ("/Patient?birthdate=ap1990", ["p1"]),
        ("/Patient?_lastUpdated=ap0001", []),
        ("/Patient?_lastUpdated=ap9999-12-31", []),
    ],
    ids=["birthdate-9999", "birthdate-0001", "birthdate-1990", "lastupdated-0001", "lastupdated-9999"],
)
def test_approximate_date_at_the_ends_of_time_searches(fhir: FhirClient, path: str, found: list[str]) -> None:
    assert fhir.call("PUT", "/Patient/p1", {**PATIENT, "birthDate": "1990-06-01"}).status_code == 201
    r = fhir.call("GET", path)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [e["resource"]["id"] for e in r.get_json().get("entry", [])] == found


def test_huge_count_is_capped_not_refused(fhir: FhirClient, p1: dict[str, Any]) -> None:
    # A server may return fewer than _count asks (R4B search.html#count): the maximum, not an error.
    for count in ("99999999999999999999999999", "9" * 5000):
        r = fhir.call("GET", f"/Patient?_count={count}")
        assert r.status_code == 200
        assert [e["resource"]["id"] for e in r.get_json()["entry"]] == ["p1"]


def test_number_beyond_double_range_still_searches(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/RiskAssessment?probability=lt1e400")
    assert r.status_code == 200
    assert r.get_json()["total"] == 0


def test_if_match_with_non_ascii_digit_is_400(fhir: FhirClient, p1: dict[str, Any]) -> None:
    r = fhir.call("PUT", "/Patient/p1", PATIENT, headers={"If-Match": 'W/"\u00b2"'})
    assert outcome(r, 400, "invalid")["diagnostics"].startswith("Invalid ETag")


def test_batch_entry_with_out_of_range_offset_fails_alone(fhir: FhirClient, p1: dict[str, Any]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient?_offset={BIG}"}},
            {"request": {"method": "GET", "url": "Patient/p1/_history/99999999999999999999"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    statuses = [e["response"]["status"].split()[0] for e in r.get_json()["entry"]]
    assert statuses == ["400", "404", "200"]


# -- NUL characters (PostgreSQL text cannot hold U+0000; no FHIR string may) ---------------------


def _nul_outcome(resp: Any, expression: str | None) -> None:
    issue = outcome(resp, 400, "invalid")
    assert "NUL" in issue["diagnostics"]
    if expression is not None:
        assert issue["expression"] == [expression]


def _audited_failure(app: Any, subtype: str) -> dict[str, Any]:
    """The last request event: it must be this interaction's, with outcome 4 (minor failure)."""
    row = audit_rows(app)[-1]
    assert (row["subtype"], row["outcome"]) == (subtype, 4), row
    return row


@pytest.mark.parametrize(
    ("path", "expression", "subtype"),
    [
        ("/Patient?name=a%00b", "name", "search-type"),
        ("/Patient?a%00b=1", "a\ufffdb", "search-type"),
        ("/Patient?_id=a%00b", "_id", "search-type"),
        ("/Patient?identifier=a%00b|x", "identifier", "search-type"),
        ("/Patient?general-practitioner=Practitioner/a%00b", "general-practitioner", "search-type"),
        ("/Patient?_has:Observation:subject:code=a%00", "_has:Observation:subject:code", "search-type"),
        ("/Patient?_sort=a%00", "_sort", "search-type"),
        ("/Patient/p1/Observation?code=%00", "code", "search-type"),
        ("/?_type=Patient&name=%00", "name", "search-system"),
    ],
    ids=["string", "name", "_id", "token", "reference", "_has", "_sort", "compartment", "system"],
)
def test_nul_in_search_is_400_and_audited(
    fhir: FhirClient, app: Any, p1: dict[str, Any], path: str, expression: str, subtype: str
) -> None:
    _nul_outcome(fhir.call("GET", path), expression)
    row = _audited_failure(app, subtype)
    assert "\x00" not in (row["query"] or "")


@pytest.mark.parametrize(
    ("method", "path", "subtype"),
    [
        ("GET", "/Patient/a%00b", "read"),
        ("GET", "/Patient/a%00b/_history/1", "vread"),
        ("GET", "/Patient/a%00b/_history", "history-instance"),
        ("DELETE", "/Patient/a%00b", "delete"),
        ("GET", "/AuditEvent/1%00", "read"),
    ],
    ids=["read", "vread", "history", "delete", "auditevent-read"],
)
def test_nul_in_id_is_400_and_audited(
    fhir: FhirClient, app: Any, method: str, path: str, subtype: str
) -> None:
    issue = outcome(fhir.call(method, path), 400, "invalid")
    assert issue["diagnostics"].startswith("Invalid resource id")
    row = _audited_failure(app, subtype)
    assert row["resource"] is None or "\ufffd" in row["resource"]


NUL_NAME = {"resourceType": "Patient", "name": [{"family": "a\x00b"}]}


@pytest.mark.parametrize(
    ("method", "path", "body", "expression", "subtype"),
    [
        ("POST", "/Patient", NUL_NAME, "Patient.name[0].family", "create"),
        ("PUT", "/Patient/p2", {**NUL_NAME, "id": "p2"}, "Patient.name[0].family", "update"),
        (
            "POST",
            "/Patient",
            {"resourceType": "Patient", "gen\x00der": "x"},
            "Patient.gen\ufffdder",
            "create",
        ),
        ("POST", "/Patient/$validate", NUL_NAME, "Patient.name[0].family", "operation"),
        (
            "POST",
            "/",
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": NUL_NAME, "request": {"method": "POST", "url": "Patient"}}],
            },
            "Bundle.entry[0].resource.name[0].family",
            "transaction",
        ),
    ],
    ids=["create", "update", "key", "operation", "transaction"],
)
def test_nul_in_body_is_400_with_path_and_audited(
    fhir: FhirClient, app: Any, method: str, path: str, body: Any, expression: str, subtype: str
) -> None:
    _nul_outcome(fhir.call(method, path, body), expression)
    _audited_failure(app, subtype)
    assert fhir.call("GET", "/Patient?_total=accurate").get_json()["total"] == 0


def test_nul_in_patch_value_is_400(fhir: FhirClient, app: Any, p1: dict[str, Any]) -> None:
    patch = [{"op": "replace", "path": "/gender", "value": "a\x00"}]
    r = fhir.call("PATCH", "/Patient/p1", patch, content_type="application/json-patch+json")
    _nul_outcome(r, "[0].value")
    _audited_failure(app, "patch")


def test_nul_in_search_form_body_is_400(fhir: FhirClient, app: Any) -> None:
    r = fhir.call("POST", "/Patient/_search", b"name=a%00", content_type="application/x-www-form-urlencoded")
    _nul_outcome(r, "name")
    _audited_failure(app, "search-type")


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "subtype"),
    [
        ("POST", "/Patient", PATIENT, {"If-None-Exist": "name=a%00"}, "create"),
        ("PUT", "/Patient?name=a%00", PATIENT, {}, "update"),
        ("DELETE", "/Patient?name=a%00", None, {}, "delete"),
    ],
    ids=["if-none-exist", "conditional-update", "conditional-delete"],
)
def test_nul_in_conditional_criteria_is_400(
    fhir: FhirClient, app: Any, method: str, path: str, body: Any, headers: dict[str, str], subtype: str
) -> None:
    _nul_outcome(fhir.call(method, path, body, headers=headers), "name")
    _audited_failure(app, subtype)


def test_nul_in_batch_entry_url_fails_that_entry(fhir: FhirClient, p1: dict[str, Any]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient?name=a%00"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    statuses = [e["response"]["status"].split()[0] for e in r.get_json()["entry"]]
    assert statuses == ["400", "200"]


def test_nul_in_provenance_header_is_400_and_nothing_is_stored(fhir: FhirClient, app: Any) -> None:
    provenance = {
        "resourceType": "Provenance",
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"display": "a\x00"}}],
    }
    r = fhir.call("POST", "/Patient", PATIENT, headers={"X-Provenance": orjson.dumps(provenance).decode()})
    _nul_outcome(r, None)
    _audited_failure(app, "create")
    assert fhir.call("GET", "/Patient?_total=accurate").get_json()["total"] == 0


def test_nul_in_basic_credentials_is_not_500(app: Any, database_url: str) -> None:
    basic = base64.b64encode(b"a\x00:b").decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers={"Authorization": "Basic " + basic},
    )
    if database_url.startswith("sqlite"):  # no such client
        assert (r.status_code, r.get_json()["error"]) == (401, "invalid_client")
    else:  # PostgreSQL refuses the NUL before the lookup: the store's safety net answers 400
        outcome(r, 400, "invalid")


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("agent=%00", "agent"),
        ("entity=Patient/%00", "entity"),
        ("patient=%00", "patient"),
        ("_id=1%00", "_id"),
    ],
    ids=["agent", "entity", "patient", "_id"],
)
def test_nul_in_auditevent_search_is_400(fhir: FhirClient, app: Any, query: str, expression: str) -> None:
    _nul_outcome(fhir.call("GET", f"/AuditEvent?{query}"), expression)
    _audited_failure(app, "search-type")


# -- a lost database: 503 transient with Retry-After, and the next request works -----------------


def _unavailable(resp: Any) -> None:
    issue = outcome(resp, 503, "transient")
    assert "database" in issue["diagnostics"]
    assert int(resp.headers["Retry-After"]) > 0


def _own_app(database_url: str) -> tuple[Any, FhirClient]:
    app = create_app(
        Settings(
            database_url=database_url,
            testing=True,
            base_url="http://testserver/fhir",
            audit_witness=witness_path(database_url),  # not one in the working directory
        )
    )
    client = FhirClient(app.test_client(), client_credentials_token(app))
    assert client.call("PUT", "/Patient/p1", PATIENT).status_code == 201
    return app, client


def _stop(app: Any) -> None:
    worker = app.extensions.get("rehabfhir.export_worker")
    if worker is not None:
        worker.stop()
    app.extensions["rehabfhir.engine"].dispose()


def _terminate_backends(database_url: str) -> int:
    """pg_terminate_backend every other connection to the database; return how many."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            conn.commit()
    finally:
        engine.dispose()
    return int(killed)


@contextlib.contextmanager
def _connections_refused(database_url: str) -> Iterator[None]:
    """The database refuses new connections (as if the server were down) until the block ends."""
    name = sa.make_url(database_url).database
    admin = sa.create_engine(
        sa.make_url(database_url).set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        _terminate_backends_from(admin, name)
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()


def _terminate_backends_from(admin: sa.Engine, name: str | None) -> None:
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        )


def test_postgres_terminated_connections_answer_503_then_recover() -> None:
    with fresh_postgres() as url:
        app, client = _own_app(url)
        try:
            assert client.call("GET", "/Patient/p1").status_code == 200
            assert _terminate_backends(url) > 0
            _unavailable(client.call("GET", "/Patient/p1"))
            r = client.call("GET", "/Patient/p1")
            assert r.status_code == 200, r.get_data(as_text=True)
            # Both requests are in the trail: the 503 as a major failure (12), then the read.
            assert [(e["subtype"], e["outcome"]) for e in audit_rows(app)[-3:]] == [
                ("read", 0),
                ("read", 12),
                ("read", 0),
            ]
        finally:
            _stop(app)


def test_postgres_down_answers_503_even_though_the_audit_cannot_be_written() -> None:
    with fresh_postgres() as url:
        app, client = _own_app(url)
        try:
            with _connections_refused(url):
                _unavailable(client.call("GET", "/Patient/p1"))
                _unavailable(client.call("POST", "/Patient", PATIENT))
            assert client.call("GET", "/Patient/p1").status_code == 200
        finally:
            _stop(app)


def test_sqlite_database_gone_answers_503_then_recovers(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "clinic.db"
    app, client = _own_app(f"sqlite:///{db}")
    try:
        app.extensions["rehabfhir.engine"].dispose()  # close pooled connections (checkpoints the WAL)
        db.rename(tmp_path / "away.db")
        db.mkdir()  # a directory where the file was: "unable to open database file"
        _unavailable(client.call("GET", "/Patient/p1"))
        _unavailable(client.call("POST", "/Patient", PATIENT))
        db.rmdir()
        (tmp_path / "away.db").rename(db)
        assert client.call("GET", "/Patient/p1").status_code == 200
    finally:
        _stop(app)


def test_disconnect_error_from_the_store_is_503_and_audited(
    fhir: FhirClient, app: Any, p1: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(*_args: Any, **_kwargs: Any) -> Any:
        raise sa.exc.OperationalError(
            "SELECT 1", {}, Exception("connection lost"), connection_invalidated=True
        )

    monkeypatch.setattr(SqlRepository, "read_resource", lost)
    _unavailable(fhir.call("GET", "/Patient/p1"))
    assert [(e["subtype"], e["outcome"]) for e in audit_rows(app)[-1:]] == [("read", 12)]


@pytest.mark.parametrize(
    "error",
    [RuntimeError("bug"), sa.exc.ProgrammingError("SELECT x", {}, Exception("syntax error"))],
    ids=["python-bug", "sql-bug"],
)
def test_unexpected_exception_is_still_500_and_logged(
    fhir: FhirClient,
    p1: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(SqlRepository, "read_resource", broken)
    with caplog.at_level(logging.ERROR, logger="rehabfhir"):
        r = fhir.call("GET", "/Patient/p1")
    issue = outcome(r, 500, "exception")
    request_id = r.headers["X-Request-Id"]
    assert request_id in issue["diagnostics"]
    assert any(request_id in rec.getMessage() and rec.exc_info for rec in caplog.records)


# -- standard reason phrases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "token", "status_line"),
    [
        ("GET", "/Patient", "", "401 Unauthorized"),
        ("GET", "/Patient/nope", None, "404 Not Found"),
        ("GET", f"/Patient?_offset={BIG}", None, "400 Bad Request"),
        ("PATCH", "/Patient", None, "405 Method Not Allowed"),
        ("GET", "/Patient", None, "200 OK"),
    ],
    ids=["401", "404", "400", "405", "200"],
)
def test_status_carries_the_standard_reason_phrase(
    app: Any, method: str, path: str, token: str | None, status_line: str
) -> None:
    client = FhirClient(app.test_client(), token)
    assert client.call(method, path).status == status_line


def _status_line(base: str, request: str) -> str:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.sendall(request.encode())
        return conn.sock.makefile("rb").readline().decode().rstrip("\r\n")
    finally:
        conn.close()


def test_real_server_status_lines(live_server: str, database_url: str) -> None:
    token = token_for(live_server, database_url)
    host = urllib.parse.urlsplit(live_server).netloc
    request = "{} {} HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n{}\r\n"
    bearer = f"Authorization: Bearer {token}\r\n"
    assert _status_line(live_server, request.format("GET", "/Patient", "")) == "HTTP/1.1 401 Unauthorized"
    assert _status_line(live_server, request.format("GET", "/Patient/x", bearer)) == "HTTP/1.1 404 Not Found"
    assert (
        _status_line(live_server, request.format("GET", "/Patient/a%00", bearer))
        == "HTTP/1.1 400 Bad Request"
    )
    assert _status_line(live_server, request.format("GET", "/Patient", bearer)) == "HTTP/1.1 200 OK"


# The server's background pollers (export and subscription workers, the audit head timer) are
# slowed down: one of them meeting a terminated connection first makes the pool replace every
# connection, and the request would then never see the loss it is here to answer with 503.
QUIET_POLLERS = {
    "REHABFHIR_EXPORT_POLL_SECONDS": "3600",
    "REHABFHIR_SUBSCRIPTION_POLL_SECONDS": "3600",
    "REHABFHIR_AUDIT_HEAD_INTERVAL": "3600",
}


def test_real_server_survives_terminated_connections() -> None:
    with fresh_postgres() as url, running_server(url, workers=1, env=QUIET_POLLERS) as base:
        headers = {"Authorization": "Bearer " + token_for(base, url), "Accept": "application/fhir+json"}
        url_parts = urllib.parse.urlsplit(base)

        def get(path: str) -> tuple[int, str, dict[str, Any]]:
            conn = http.client.HTTPConnection(url_parts.hostname, url_parts.port, timeout=30)
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheader("Content-Type") or "", orjson.loads(resp.read())
            finally:
                conn.close()

        assert get("/Patient")[0] == 200
        assert _terminate_backends(url) > 0
        status, content_type, body = get("/Patient")
        assert (status, body["issue"][0]["code"]) == (503, "transient")
        assert content_type.startswith("application/fhir+json")
        assert get("/Patient")[0] == 200


# -- fuzz: bodies, ids and parameters that once reached a 500 or could ------------------------------


OBS = b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"resourceType":"Patient","multipleBirthInteger":1e400}', None, 400, "invalid"),
        (OBS + b'"valueQuantity":{"value":' + b"9" * 400 + b"}}", None, 400, "invalid"),
        (OBS + b'"valueInteger":' + b"9" * 40 + b"}", None, 400, "processing"),
        (OBS + b'"valueQuantity":{"value":NaN}}', None, 400, "invalid"),
        (b"[" * 100_000 + b"]" * 100_000, None, 400, "invalid"),
        (b'{"resourceType":"Patient","extension":' + b"[" * 2000 + b"]" * 2000 + b"}", None, 400, "invalid"),
        (b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}', None, 400, "invalid"),
        (b"\xef\xbb\xbf{}", None, 400, "invalid"),
        (b"", None, 400, "invalid"),
        (b"hello", "text/plain", 415, "not-supported"),
        (b"<Patient/>", "application/fhir+xml", 415, "not-supported"),
    ],
    ids=[
        "decimal-1e400",
        "decimal-400-digits",
        "integer-40-digits",
        "nan",
        "nested-100000",
        "nested-extension-2000",
        "invalid-utf8",
        "utf8-bom",
        "empty",
        "text-plain",
        "xml",
    ],
)
def test_bad_body_is_4xx_outcome(
    fhir: FhirClient, app: Any, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    r = fhir.call("POST", "/Observation", body, content_type=content_type or "application/fhir+json")
    outcome(r, status, code)
    _audited_failure(app, "create")


@pytest.mark.parametrize(
    "path",
    [
        "/Patient/" + "a" * 65,
        "/Patient/%FF",
        "/Patient/%C3%A9",
        "/%FF",
        "/Patient?name=%FF%FE",
        "/Patient?birthdate=99999-01-01",
        "/Patient?_lastUpdated=gt99999",
        "/Observation?date=lt0001-01-01T00:00:00%2B14:00",
        "/Patient/_history?_since=2020%00",
        "/Patient?_include=%00",
        "/Patient?_elements=%FF",
    ],
    ids=[
        "id-65",
        "id-invalid-utf8",
        "id-non-ascii",
        "type-invalid-utf8",
        "value-invalid-utf8",
        "year-5-digits",
        "lastupdated-5-digits",
        "date-before-year-1",
        "since-nul",
        "include-nul",
        "elements-invalid-utf8",
    ],
)
def test_fuzzed_request_is_never_500(fhir: FhirClient, p1: dict[str, Any], path: str) -> None:
    r = fhir.call("GET", path)
    assert 200 <= r.status_code < 500, r.get_data(as_text=True)
    assert r.get_json(force=True)["resourceType"] in ("Bundle", "OperationOutcome")
