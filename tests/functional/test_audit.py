"""Audit trail: exactly the AuditEvents each interaction writes, read-only AuditEvent API, Provenance."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import flask
import orjson
import pytest
import sqlalchemy as sa

from server import create_app
from server.fhir.access import AccessContext
from server.settings import Settings
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.conftest import witness_path


def events(app: Any, *, auth: bool = False) -> list[dict[str, Any]]:
    """The audit rows, oldest first, straight from the table (reading it this way is not audited).

    Sign-in and token events (type 110114) only when `auth`: the test client's own token
    request is not what the REST tests look at.
    """
    where = "" if auth else "WHERE type <> '110114'"
    with app.extensions["rehabfhir.engine"].connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT pk, type, subtype, action, outcome, resource, patient, query, client, actor, body"
                    f" FROM audit_event {where} ORDER BY pk"
                )
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def summary(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["subtype"], r["action"], r["outcome"], r["resource"], r["patient"]) for r in rows]


def vid(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


@pytest.fixture
def patient(fhir: FhirClient) -> dict[str, Any]:
    return fhir.create({"resourceType": "Patient", "name": [{"family": "Audit"}]})


def _obs(pid: str, code: str = "x") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": code},
        "subject": {"reference": f"Patient/{pid}"},
    }


def test_create_read_vread_update_patch_delete_each_write_exactly_one_event(
    fhir: FhirClient, app: Any
) -> None:
    p = fhir.create({"resourceType": "Patient", "name": [{"family": "A"}]})
    pref = f"Patient/{p['id']}"
    o = fhir.create(_obs(p["id"]))
    oref = f"Observation/{o['id']}"
    assert fhir.call("GET", f"/{oref}").status_code == 200
    assert fhir.call("GET", f"/{oref}/_history/1").status_code == 200
    assert fhir.call("PUT", f"/{oref}", {**_obs(p["id"], "y"), "id": o["id"]}).status_code == 200
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    r = fhir.call("PATCH", f"/{oref}", patch, content_type="application/json-patch+json")
    assert r.status_code == 200
    assert fhir.call("DELETE", f"/{oref}").status_code in (200, 204)
    assert summary(events(app)) == [
        ("create", "C", 0, f"{pref}/_history/1", pref),
        ("create", "C", 0, f"{oref}/_history/1", pref),
        ("read", "R", 0, f"{oref}/_history/1", pref),
        ("vread", "R", 0, f"{oref}/_history/1", pref),
        ("update", "U", 0, f"{oref}/_history/2", pref),
        ("patch", "U", 0, f"{oref}/_history/3", pref),
        ("delete", "D", 0, f"{oref}/_history/4", pref),
    ]


def test_event_is_a_balp_audit_event(fhir: FhirClient, app: Any, patient: dict[str, Any]) -> None:
    body = orjson.loads(events(app)[0]["body"])
    assert body["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    assert body["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "create"}]
    assert body["action"] == "C" and body["outcome"] == "0"
    roles = [a["type"]["coding"][0]["code"] for a in body["agent"]]
    assert roles == ["110153", "110152"]  # client app (no user on an open server), this server
    assert body["agent"][0]["network"]["address"] == "127.0.0.1"
    assert body["agent"][1]["who"]["identifier"]["value"] == "http://testserver/fhir"
    assert body["source"]["type"][0]["code"] == "4"
    entity_roles = [(e["role"]["code"], e["what"]["reference"]) for e in body["entity"]]
    assert entity_roles == [("4", vid(patient)), ("1", f"Patient/{patient['id']}")]


def test_search_writes_one_event_per_patient_returned_with_the_query(fhir: FhirClient, app: Any) -> None:
    a = fhir.create({"resourceType": "Patient"})
    b = fhir.create({"resourceType": "Patient"})
    for pid in (a["id"], b["id"], a["id"]):
        fhir.create(_obs(pid, "knee"))
    before = len(events(app))
    r = fhir.call("GET", "/Observation?code:text=knee&_count=50")
    assert r.status_code == 200 and r.get_json()["total"] == 3
    new = events(app)[before:]
    assert sorted(x["patient"] for x in new) == sorted([f"Patient/{a['id']}", f"Patient/{b['id']}"])
    assert {(x["subtype"], x["action"], x["outcome"], x["resource"]) for x in new} == {
        ("search-type", "E", 0, None)
    }
    assert new[0]["query"] == "GET /Observation?code:text=knee&_count=50"
    entity = [e for e in orjson.loads(new[0]["body"])["entity"] if e["role"]["code"] == "24"][0]
    assert base64.b64decode(entity["query"]).decode() == "GET /Observation?code:text=knee&_count=50"


def test_search_without_patient_data_writes_one_event(fhir: FhirClient, app: Any) -> None:
    fhir.create({"resourceType": "Organization", "name": "Clinic"})
    assert fhir.call("GET", "/Organization").status_code == 200
    assert summary(events(app)[1:]) == [("search-type", "E", 0, None, None)]


def test_history_events(fhir: FhirClient, app: Any, patient: dict[str, Any]) -> None:
    pref = f"Patient/{patient['id']}"
    assert fhir.call("GET", f"/{pref}/_history").status_code == 200
    assert fhir.call("GET", "/Patient/_history").status_code == 200
    assert fhir.call("GET", "/_history").status_code == 200
    assert summary(events(app)[1:]) == [
        ("history-instance", "R", 0, pref, pref),
        ("history-type", "E", 0, None, pref),
        ("history-system", "E", 0, None, pref),
    ]


def test_failures_are_audited_with_outcome(fhir: FhirClient, app: Any) -> None:
    assert fhir.call("GET", "/Observation/nope").status_code == 404
    assert fhir.call("POST", "/Observation", {"resourceType": "Observation"}).status_code == 400
    assert fhir.call("GET", "/Observation/$nope").status_code == 404
    assert summary(events(app)) == [
        ("read", "R", 4, "Observation/nope", None),
        ("create", "C", 4, None, None),
        ("operation", "E", 4, "Observation", None),
    ]


def test_operation_is_audited(fhir: FhirClient, app: Any) -> None:
    r = fhir.call("GET", "/AuditEvent/$verify")
    assert r.status_code == 200
    assert summary(events(app)) == [("operation", "E", 0, "AuditEvent", None)]
    assert events(app)[0]["query"] == "GET /AuditEvent/$verify"


def test_transaction_entries_each_audited_in_the_transaction(
    fhir: FhirClient, app: Any, patient: dict[str, Any]
) -> None:
    pref = f"Patient/{patient['id']}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": _obs(patient["id"]),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": pref}},
            {
                "request": {"method": "PATCH", "url": pref},
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(b'[{"op":"add","path":"/active","value":true}]').decode(),
                },
            },
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    loc = r.get_json()["entry"][0]["response"]["location"]
    oref = "/".join(loc.split("/")[-4:])
    assert sorted(summary(events(app)[1:])) == sorted(
        [
            ("create", "C", 0, oref, pref),
            ("patch", "U", 0, f"{pref}/_history/2", pref),
            ("read", "R", 0, f"{pref}/_history/2", pref),
        ]
    )


def test_failed_transaction_writes_nothing_but_its_failure(fhir: FhirClient, app: Any) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Observation"},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code >= 400
    assert fhir.call("GET", "/Patient").get_json()["total"] == 0
    assert summary(events(app))[0] == ("transaction", "E", 4, None, None)


def test_batch_entries_each_audited(fhir: FhirClient, app: Any, patient: dict[str, Any]) -> None:
    pref = f"Patient/{patient['id']}"
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": pref}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200
    created = r.get_json()["entry"][2]["response"]["location"]
    new = "/".join(created.split("/")[-4:])
    assert sorted(summary(events(app)[1:])) == sorted(
        [
            ("create", "C", 0, new, "/".join(new.split("/")[:2])),
            ("read", "R", 0, f"{pref}/_history/1", pref),
            ("read", "R", 4, "Patient/missing", "Patient/missing"),
        ]
    )


def test_conditional_create_that_matches_is_audited_in_a_bundle(fhir: FhirClient, app: Any) -> None:
    ident = {"system": "urn:mrn", "value": "cc-1"}
    p = fhir.create({"resourceType": "Patient", "identifier": [ident]})
    entry = {
        "resource": {"resourceType": "Patient", "identifier": [ident]},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|cc-1"},
    }
    r = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert r.status_code == 200 and r.get_json()["entry"][0]["response"]["status"].startswith("200")
    pref = f"Patient/{p['id']}"
    assert summary(events(app)) == [
        ("create", "C", 0, f"{pref}/_history/1", pref),  # the first create
        ("create", "C", 0, f"{pref}/_history/1", pref),  # the batch entry that found it
    ]


VALID_EVENT = {
    "resourceType": "AuditEvent",
    "type": {"code": "rest"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True, "who": {"display": "forger"}}],
    "source": {"observer": {"display": "x"}},
}


def test_audit_events_are_append_only(fhir: FhirClient, app: Any, patient: dict[str, Any]) -> None:
    pk = events(app)[0]["pk"]
    for method, path in [
        ("PUT", f"/AuditEvent/{pk}"),
        ("DELETE", f"/AuditEvent/{pk}"),
        ("PATCH", f"/AuditEvent/{pk}"),
        ("PUT", "/AuditEvent/12345"),  # digits: the server's own trail
    ]:
        r = fhir.call(method, path, {**VALID_EVENT, "id": path.rsplit("/", 1)[-1]})
        assert r.status_code == 405, (method, r.get_data(as_text=True))
        assert r.get_json()["resourceType"] == "OperationOutcome"
    # Another system records its own event (IHE ATNA): a create, kept as received, audited.
    made = fhir.call("POST", "/AuditEvent", VALID_EVENT)
    assert made.status_code == 201, made.get_data(as_text=True)
    sid = made.get_json()["id"]
    put = fhir.call("PUT", "/AuditEvent/ehr-evt-1", {**VALID_EVENT, "id": "ehr-evt-1"})
    assert put.status_code == 201
    got = fhir.call("GET", "/AuditEvent/ehr-evt-1").get_json()
    # Kept as received, but for the audit source: the submitting client (test_auth_audit_submission.py).
    assert {k: v for k, v in got.items() if k not in ("meta", "source")} == {
        k: v for k, v in {**VALID_EVENT, "id": "ehr-evt-1"}.items() if k != "source"
    }
    for method, path in [("PUT", "/AuditEvent/ehr-evt-1"), ("DELETE", f"/AuditEvent/{sid}")]:
        r = fhir.call(method, path, {**VALID_EVENT, "id": "ehr-evt-1", "outcome": "8"})
        assert r.status_code == 405, (method, r.get_data(as_text=True))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "AuditEvent/ehr-evt-1"}}],
    }
    assert fhir.call("POST", "/", bundle).status_code == 405
    assert "outcome" not in fhir.call("GET", "/AuditEvent/ehr-evt-1").get_json()  # unchanged
    rows = summary(events(app))
    assert ("update", "U", 0, "AuditEvent/ehr-evt-1/_history/1", None) in rows  # update-as-create
    assert sum(1 for r in rows if r[2] == 4) == 7  # one failure event per refused write


def test_audit_event_read_and_search(fhir: FhirClient, app: Any) -> None:
    a = fhir.create({"resourceType": "Patient"})
    b = fhir.create({"resourceType": "Patient"})
    fhir.call("GET", f"/Patient/{a['id']}")
    fhir.call("GET", "/Patient/missing")
    rows = events(app)
    r = fhir.call("GET", f"/AuditEvent/{rows[0]['pk']}")
    assert r.status_code == 200 and r.get_json()["id"] == str(rows[0]["pk"])
    assert r.get_json()["action"] == "C"
    assert fhir.call("GET", "/AuditEvent/999999").status_code == 404

    def ids(query: str) -> list[str]:
        resp = fhir.call("GET", "/AuditEvent?" + query)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return [e["resource"]["id"] for e in resp.get_json().get("entry", [])]

    pk = [str(x["pk"]) for x in rows]
    assert ids(f"patient={a['id']}&_sort=date") == [pk[0], pk[2]]
    assert ids(f"patient=Patient/{b['id']}") == [pk[1]]
    assert ids("action=C&_sort=-date") == [pk[1], pk[0]]
    assert ids("outcome=4&entity=Patient/missing") == [pk[3]]
    read = "subtype=http://hl7.org/fhir/restful-interaction|read"
    assert ids(f"{read}&patient={a['id']}&_sort=outcome") == [pk[2]]
    assert ids(f"subtype=read,create&entity=Patient/missing,Patient/{a['id']}&_sort=-outcome,date") == [
        pk[3],
        pk[0],
        pk[2],
    ]
    assert ids(f"entity=Patient/{a['id']}&_sort=-subtype") == [pk[2], pk[0]]
    # The Patient compartment's AuditEvents are the trail's events about that patient (they were
    # searched among submitted events only, so an auditor's compartment search found none).
    inside = fhir.call("GET", f"/Patient/{a['id']}/AuditEvent?_sort=date")
    assert inside.status_code == 200, inside.get_data(as_text=True)
    assert [e["resource"]["id"] for e in inside.get_json()["entry"]] == [pk[0], pk[2]]
    searched = events(app)[-1]  # the compartment search's own event: a search of AuditEvent
    assert (searched["subtype"], searched["resource"]) == ("search-type", None), searched
    assert fhir.call("GET", "/Patient/bad$id/AuditEvent").status_code == 400
    clinician = FhirClient(app.test_client(), client_credentials_token(app, "system/Patient.rs"))
    assert clinician.call("GET", f"/Patient/{a['id']}/AuditEvent").status_code == 403  # not an auditor
    assert ids(f"type=rest&agent={rows[0]['client']}&_count=1&_sort=date") == [pk[0]]
    assert ids("type=rest&source=http://testserver/fhir&action=C,R&_sort=action,date&_count=4") == pk[:4]
    assert ids("source=http://elsewhere") == []
    assert ids("type=rest&date=ge2000-01-01&date=lt2999-01-01&_sort=date&_count=4") == pk[:4]
    assert ids("date=lt2000-01-01") == []
    page = fhir.call("GET", "/AuditEvent?type=rest&_sort=date&_count=2").get_json()
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"][0]
    second = fhir.call("GET", nxt.replace("http://testserver/fhir", "")).get_json()
    assert [e["resource"]["id"] for e in second["entry"]] == pk[2:4]
    assert fhir.call("GET", "/AuditEvent?_sort=nonsense").status_code == 400
    assert fhir.call("GET", "/AuditEvent?date=notadate").status_code == 400


def test_export_ndjson_of_a_time_range(fhir: FhirClient, app: Any, patient: dict[str, Any]) -> None:
    fhir.call("GET", f"/Patient/{patient['id']}")
    r = fhir.call("GET", "/AuditEvent/$export-ndjson?date=ge2000-01-01", headers={"Accept": "*/*"})
    assert r.status_code == 200 and r.mimetype == "application/fhir+ndjson"
    lines = [orjson.loads(x) for x in r.get_data(as_text=True).splitlines()]
    # The test client's token request comes first; the export is audited before it streams,
    # so it lists itself last.
    assert [(x["action"], x["subtype"][0]["code"]) for x in lines] == [
        ("E", "token-issue"),
        ("C", "create"),
        ("R", "read"),
        ("E", "operation"),
    ]
    assert all(x["resourceType"] == "AuditEvent" and x["id"] for x in lines)
    empty = fhir.call("GET", "/AuditEvent/$export-ndjson?date=lt2000-01-01", headers={"Accept": "*/*"})
    assert empty.get_data() == b""


def test_provenance_header_is_stored_targeting_the_new_version(fhir: FhirClient, app: Any) -> None:
    prov = {
        "resourceType": "Provenance",
        "agent": [{"who": {"reference": "Practitioner/7"}}],
        "recorded": "2026-01-01T00:00:00Z",
    }
    r = fhir.call(
        "POST", "/Patient", {"resourceType": "Patient"}, headers={"X-Provenance": orjson.dumps(prov).decode()}
    )
    assert r.status_code == 201
    p = r.get_json()
    found = fhir.call("GET", f"/Provenance?target=Patient/{p['id']}").get_json()
    assert found["total"] == 1
    stored = found["entry"][0]["resource"]
    assert stored["target"] == [{"reference": vid(p)}]
    assert stored["agent"] == prov["agent"]
    assert [s[0] for s in summary(events(app))] == ["create", "create", "search-type"]


def test_bad_provenance_header_fails_the_write(fhir: FhirClient, app: Any) -> None:
    r = fhir.call("POST", "/Patient", {"resourceType": "Patient"}, headers={"X-Provenance": "{not json"})
    assert r.status_code == 400
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.call("GET", "/Patient").get_json()["total"] == 0
    assert summary(events(app))[0] == ("create", "C", 4, None, None)


def test_audit_write_failure_fails_the_request(
    fhir: FhirClient, app: Any, monkeypatch: pytest.MonkeyPatch, patient: dict[str, Any]
) -> None:
    from server.audit import chain

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("audit store down")

    monkeypatch.setattr(chain, "append", broken)
    monkeypatch.setattr(chain, "pending_row", broken)  # PostgreSQL: the write's records, unlinked
    r = fhir.call("GET", f"/Patient/{patient['id']}")
    assert r.status_code == 500 and r.get_json()["issue"][0]["code"] == "exception"
    r = fhir.call("POST", "/Patient", {"resourceType": "Patient"})
    assert r.status_code == 500 and r.get_json()["resourceType"] == "OperationOutcome"
    monkeypatch.undo()
    assert fhir.call("GET", "/Patient").get_json()["total"] == 1  # the failed create left nothing


# -- access: auditors, clinicians, patients -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopedContext(AccessContext):
    """An AccessContext that grants exactly the listed (type, interaction) pairs."""

    granted: frozenset[tuple[str, str]] = frozenset()

    def can(self, resource_type: str, interaction: str) -> bool:
        return (resource_type, interaction) in self.granted or ("*", interaction) in self.granted


@pytest.fixture(scope="session")
def scoped_app(database_url: str) -> Any:
    settings = Settings(
        database_url=database_url,
        testing=True,
        base_url="http://testserver/fhir",
        audit_witness=witness_path(database_url),  # the session app's witness, not one in the checkout
        audit_head_interval=0,
    )
    app = create_app(settings)
    worker = app.extensions.get("rehabfhir.export_worker")
    if worker is not None:  # one export worker per database is enough (the session app's)
        worker.stop()
    app.config["TEST_CONTEXT"] = None

    @app.before_request
    def _use_context() -> None:
        if app.config["TEST_CONTEXT"] is not None:
            flask.g.access = app.config["TEST_CONTEXT"]

    yield app
    app.extensions["rehabfhir.engine"].dispose()


@pytest.fixture
def as_ctx(app: Any, scoped_app: Any) -> Any:
    client = FhirClient(scoped_app.test_client())

    def use(ctx: AccessContext | None) -> FhirClient:
        scoped_app.config["TEST_CONTEXT"] = ctx
        return client

    yield use
    scoped_app.config["TEST_CONTEXT"] = None


AUDITOR = ScopedContext(
    user="Practitioner/aud",
    client_id="audit-app",
    unrestricted=False,
    granted=frozenset({("AuditEvent", "r"), ("AuditEvent", "s")}),
)
CLINICIAN = ScopedContext(
    user="Practitioner/doc",
    client_id="ehr",
    unrestricted=False,
    granted=frozenset({("*", c) for c in "cruds"} - {("AuditEvent", "r"), ("AuditEvent", "s")}),
)


def test_auditor_sees_clinician_does_not(as_ctx: Any, app: Any) -> None:
    clin = as_ctx(
        ScopedContext(
            user="Practitioner/doc",
            client_id="ehr",
            unrestricted=False,
            granted=frozenset({("Patient", c) for c in "crs"}),
        )
    )
    assert clin.call("POST", "/Patient", {"resourceType": "Patient"}).status_code == 201
    r = clin.call("GET", "/AuditEvent")
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert clin.call("GET", "/AuditEvent/$verify").status_code == 403
    r = as_ctx(AUDITOR).call("GET", "/AuditEvent?type=rest&_sort=date")
    assert r.status_code == 200
    got = [(e["resource"]["subtype"][0]["code"], e["resource"]["outcome"]) for e in r.get_json()["entry"]]
    assert got == [("create", "0"), ("search-type", "8"), ("operation", "8")]
    first = r.get_json()["entry"][0]["resource"]
    assert first["agent"][0]["who"] == {"reference": "Practitioner/doc"}
    assert first["agent"][1]["who"] == {"identifier": {"value": "ehr"}}
    assert summary(events(app))[-1][:3] == ("search-type", "E", 0)  # the auditor's search, audited too


def test_patient_sees_only_events_about_their_record(as_ctx: Any, app: Any, fhir: FhirClient) -> None:
    mine = fhir.create({"resourceType": "Patient"})
    other = fhir.create({"resourceType": "Patient"})
    fhir.call("GET", f"/Patient/{other['id']}")
    me = ScopedContext(
        user=f"Patient/{mine['id']}",
        client_id="app",
        patient=mine["id"],
        unrestricted=False,
        granted=frozenset({("AuditEvent", "r"), ("AuditEvent", "s")}),
    )
    client = as_ctx(me)
    r = client.call("GET", "/AuditEvent")
    assert r.status_code == 200
    assert [e["resource"]["entity"][-1]["what"]["reference"] for e in r.get_json()["entry"]] == [
        f"Patient/{mine['id']}"
    ]
    theirs = [x["pk"] for x in events(app) if x["patient"] == f"Patient/{other['id']}"]
    assert client.call("GET", f"/AuditEvent/{theirs[0]}").status_code == 404
    assert client.call("GET", "/AuditEvent/$verify").status_code == 403


def test_export_status_download_and_rehab_views_are_audited(
    fhir: FhirClient, app: Any, patient: dict[str, Any]
) -> None:
    from tests.functional.test_export import download
    from tests.functional.test_export import kick_off
    from tests.functional.test_export import local
    from tests.functional.test_export import wait

    status_path = kick_off(fhir, "/Patient/$export?_type=Patient")
    manifest = wait(fhir, status_path)
    file_url = manifest["output"][0]["url"]
    assert download(fhir, file_url)
    assert fhir.call("GET", f"/rehab/patients/{patient['id']}/progress").status_code == 200
    csv_path = f"/rehab/patients/{patient['id']}/measures.csv"  # CSV: the plain client, not FhirClient
    assert fhir.c.get(csv_path, headers={"Authorization": f"Bearer {fhir.token}"}).status_code == 200
    assert (
        FhirClient(app.test_client(), token="").call("GET", "/rehab/patients/x/progress").status_code == 401
    )
    assert fhir.call("DELETE", status_path).status_code == 202
    rows = [r for r in events(app) if r["subtype"] == "operation"]
    got = [(r["action"], r["outcome"], r["query"], r["patient"]) for r in rows]
    polls = [g for g in got if g[2] == f"GET {status_path}"]
    assert polls and all(p[:2] == ("E", 0) for p in polls)
    assert ("R", 0, f"GET {local(file_url)}", None) in got
    assert ("E", 0, f"GET /rehab/patients/{patient['id']}/progress", f"Patient/{patient['id']}") in got
    assert ("E", 8, "GET /rehab/patients/x/progress", "Patient/x") in got
    assert ("E", 0, f"GET {csv_path}", f"Patient/{patient['id']}") in got  # the same data, as CSV
    assert got[-1] == ("D", 0, f"DELETE {status_path}", None)


def test_out_of_range_and_non_ascii_ids_and_numbers_are_client_errors(fhir: FhirClient, app: Any) -> None:
    fhir.create({"resourceType": "Patient"})  # audit record 1 exists
    for path, status in [
        ("/AuditEvent/99999999999999999999999", 404),  # beyond BIGINT: no such record, not a 500
        ("/AuditEvent/%EF%BC%91", 400),  # a full-width "1" is not record 1, nor a FHIR id
        ("/AuditEvent?_offset=99999999999999999999999", 400),
        ("/AuditEvent?outcome=99999999999999999999", 400),
    ]:
        r = fhir.call("GET", path)
        assert r.status_code == status, (path, r.get_data(as_text=True))
        assert r.get_json()["resourceType"] == "OperationOutcome"
    r = fhir.call("GET", "/AuditEvent?_id=99999999999999999999999")
    assert r.status_code == 200 and r.get_json().get("entry", []) == []
    put = fhir.call(
        "PUT", "/AuditEvent/99999999999999999999999", {**VALID_EVENT, "id": "99999999999999999999999"}
    )
    assert put.status_code == 405  # numeric: the server's own trail, never written by clients


def test_every_event_of_an_episode_names_its_patient(app: Any, fhir: FhirClient) -> None:
    """Issue 17's endpoints: the episode view (before and after discharge), the episode list, a goal's
    PATCH, re-certification, adherence and discharge, answered or refused after the episode was read,
    each name the episode's patient; a token refused before it could read the episode names nobody."""
    from tests.conftest import client_credentials_token
    from tests.functional.test_episode import patient_token
    from tests.functional.test_episode import post
    from tests.functional.test_episode_discharge import DISCHARGE
    from tests.functional.test_episode_discharge import episode_of_care
    from tests.functional.test_episode_plan import CERT

    pid, eid, refs = episode_of_care(fhir)  # writes: plan of care, goals, sessions, a day of adherence
    pref = f"Patient/{pid}"
    first = len(events(app))
    assert fhir.call("GET", f"/rehab/episodes/{eid}").status_code == 200
    assert fhir.call("GET", f"/EpisodeOfCare?patient={pid}").status_code == 200  # the page's episode list
    goal = refs["goal"][0].split("/")[1]
    r = fhir.call("PATCH", f"/rehab/goals/{goal}", {"note": "on track"}, content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    renewed = {**CERT, "start": "2027-01-01", "end": "2027-02-15"}
    assert post(fhir, f"/rehab/episodes/{eid}/recertification", renewed).status_code == 200
    day = {"patient": pid, "date": "2026-11-22", "exercises": [{"exercise": "Bridges", "status": "done"}]}
    assert post(fhir, "/rehab/adherence", day).status_code == 201
    early = post(fhir, f"/rehab/episodes/{eid}/discharge", {**DISCHARGE, "date": "2026-11-01"})
    assert early.status_code == 400  # refused after the episode was read: still this patient's
    assert post(fhir, f"/rehab/episodes/{eid}/discharge", DISCHARGE).status_code == 201
    again = post(fhir, f"/rehab/episodes/{eid}/recertification", renewed)
    assert again.status_code == 400  # the episode is finished
    assert fhir.call("GET", f"/rehab/episodes/{eid}").status_code == 200
    mine = [r for r in events(app)[first:] if not str(r["resource"] or "").startswith("Practitioner/")]
    assert mine and all(r["patient"] == pref for r in mine), [
        (r["subtype"], r["outcome"], r["resource"], r["query"], r["patient"])
        for r in mine
        if r["patient"] != pref
    ]
    ops = {(r["outcome"], r["query"]) for r in mine if r["subtype"] == "operation"}
    assert (0, f"GET /rehab/episodes/{eid}") in ops and (4, f"POST /rehab/episodes/{eid}/discharge") in ops
    assert (4, f"POST /rehab/episodes/{eid}/recertification") in ops
    written = {str(r["resource"]).split("/")[0] for r in mine if r["action"] in ("C", "U")}
    assert {"Goal", "CarePlan", "ServiceRequest", "Observation", "Composition", "EpisodeOfCare"} <= written

    # Refused before the episode is read (no search grant; another patient's token): no patient named.
    first = len(events(app))
    no_search = FhirClient(app.test_client(), client_credentials_token(app, "system/EpisodeOfCare.rs"))
    assert no_search.call("GET", f"/rehab/episodes/{eid}").status_code == 403
    other = fhir.create({"resourceType": "Patient"})["id"]
    theirs = FhirClient(
        app.test_client(), patient_token(app, other, "launch/patient openid fhirUser patient/*.rs")
    )
    assert theirs.call("GET", f"/rehab/episodes/{eid}").status_code == 404
    refused = [
        (r["outcome"], r["query"], r["patient"]) for r in events(app)[first:] if r["subtype"] == "operation"
    ]
    assert refused == [(8, f"GET /rehab/episodes/{eid}", None), (4, f"GET /rehab/episodes/{eid}", None)]
