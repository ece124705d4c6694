"""REST interactions end to end through the Flask app, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import FhirClient

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Okafor", "given": ["Ada"]}],
    "gender": "female",
    "birthDate": "1961-04-02",
}


def outcome(resp) -> dict:  # type: ignore[no-untyped-def]
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    return body


def test_create_assigns_id_version_and_headers(fhir: FhirClient) -> None:
    r = fhir.call("POST", "/Patient", {**PATIENT, "id": "ignored"})
    assert r.status_code == 201
    body = r.get_json()
    assert body["id"] != "ignored"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_stored_resource(fhir: FhirClient) -> None:
    created = fhir.create(PATIENT)
    r = fhir.call("GET", f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.get_json() == created
    assert r.headers["ETag"] == 'W/"1"'


def test_read_conditional_304(fhir: FhirClient) -> None:
    created = fhir.create(PATIENT)
    path = f"/Patient/{created['id']}"
    assert fhir.call("GET", path, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.call("GET", path, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    last_modified = fhir.call("GET", path).headers["Last-Modified"]
    assert fhir.call("GET", path, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert (
        fhir.call("GET", path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code
        == 200
    )


def test_update_versions_and_if_match(fhir: FhirClient) -> None:
    created = fhir.create(PATIENT)
    pid = created["id"]
    r = fhir.call("PUT", f"/Patient/{pid}", {**created, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.get_json()["meta"]["versionId"] == "2"
    assert r.headers["ETag"] == 'W/"2"'
    stale = fhir.call("PUT", f"/Patient/{pid}", created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert outcome(stale)["issue"][0]["code"] == "conflict"
    assert "version" in outcome(stale)["issue"][0]["diagnostics"]
    v1 = fhir.call("GET", f"/Patient/{pid}/_history/1").get_json()
    assert v1["gender"] == "female" and v1["meta"]["versionId"] == "1"
    assert fhir.call("GET", f"/Patient/{pid}/_history/2").get_json()["gender"] == "other"
    assert fhir.call("GET", f"/Patient/{pid}/_history/9").status_code == 404


def test_update_as_create_with_client_id(fhir: FhirClient) -> None:
    r = fhir.call("PUT", "/Patient/pt-1", {**PATIENT, "id": "pt-1"})
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/Patient/pt-1/_history/1")
    assert fhir.call("PUT", "/Patient/pt-1", {**PATIENT, "id": "pt-1"}).status_code == 200


def test_delete_tombstone_then_gone_and_history(fhir: FhirClient) -> None:
    pid = fhir.create(PATIENT)["id"]
    assert fhir.call("DELETE", f"/Patient/{pid}").status_code == 204
    r = fhir.call("GET", f"/Patient/{pid}")
    assert r.status_code == 410
    assert outcome(r)["issue"][0]["code"] == "deleted"
    assert fhir.call("DELETE", f"/Patient/{pid}").status_code == 204
    history = fhir.call("GET", f"/Patient/{pid}/_history").get_json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert history["entry"][0]["response"]["etag"] == 'W/"2"'
    assert "resource" not in history["entry"][0]
    assert fhir.call("GET", f"/Patient/{pid}/_history/2").status_code == 410
    # an update after delete resurrects the resource as a new version
    r = fhir.call("PUT", f"/Patient/{pid}", {**PATIENT, "id": pid})
    assert r.status_code == 201 and r.get_json()["meta"]["versionId"] == "3"


def test_json_patch(fhir: FhirClient) -> None:
    pid = fhir.create(PATIENT)["id"]
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/active", "value": True},
    ]
    r = fhir.call("PATCH", f"/Patient/{pid}", ops, content_type="application/json-patch+json")
    assert r.status_code == 200
    body = r.get_json()
    assert body["gender"] == "male" and body["active"] is True and body["meta"]["versionId"] == "2"
    bad = fhir.call(
        "PATCH",
        f"/Patient/{pid}",
        [{"op": "replace", "path": "/nope/x", "value": 1}],
        content_type="application/json-patch+json",
    )
    assert bad.status_code == 422
    invalid = fhir.call(
        "PATCH",
        f"/Patient/{pid}",
        [{"op": "replace", "path": "/gender", "value": 7}],
        content_type="application/json-patch+json",
    )
    assert invalid.status_code == 400  # gender 7: the patched Patient breaks the base rules
    merge = fhir.call(
        "PATCH", f"/Patient/{pid}", {"active": False}, content_type="application/merge-patch+json"
    )
    assert merge.status_code == 415
    assert outcome(merge)["issue"][0]["code"] == "not-supported"
    stale = fhir.call(
        "PATCH",
        f"/Patient/{pid}",
        ops,
        content_type="application/json-patch+json",
        headers={"If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    assert fhir.call("GET", f"/Patient/{pid}").get_json()["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    ("prefer", "status", "check"),
    [
        ("return=minimal", 201, lambda r: r.get_data() == b""),
        ("return=representation", 201, lambda r: r.get_json()["resourceType"] == "Patient"),
        ("return=OperationOutcome", 201, lambda r: r.get_json()["resourceType"] == "OperationOutcome"),
    ],
    ids=["minimal", "representation", "outcome"],
)
def test_prefer_return(fhir: FhirClient, prefer: str, status: int, check) -> None:  # type: ignore[no-untyped-def]
    r = fhir.call("POST", "/Patient", PATIENT, headers={"Prefer": prefer})
    assert r.status_code == status
    assert "Location" in r.headers
    assert check(r)


def test_formats_and_pretty(fhir: FhirClient) -> None:
    pid = fhir.create(PATIENT)["id"]
    r = fhir.call("GET", f"/Patient/{pid}?_pretty=true")
    assert b'\n  "resourceType"' in r.get_data()
    r = fhir.call("GET", f"/Patient/{pid}?_format=json")
    assert r.status_code == 200
    r = fhir.call("GET", f"/Patient/{pid}", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert fhir.call("GET", f"/Patient/{pid}?_format=xml").status_code == 406
    r = fhir.call("GET", f"/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 406 and outcome(r)["issue"][0]["code"] == "not-supported"
    r = fhir.call("POST", "/Patient", PATIENT, content_type="application/json")
    assert r.status_code == 201
    r = fhir.call("POST", "/Patient", "<Patient/>", content_type="application/fhir+xml")
    assert r.status_code == 415


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/Patient", b'{"resourceType": "Patient", "name": [', 400, "invalid"),
        ("POST", "/Patient", b"", 400, "invalid"),
        ("POST", "/Patient", [1, 2], 400, "invalid"),
        (
            "POST",
            "/Observation",
            {"resourceType": "Observation", "valueQuantity": {"value": "high"}},
            400,
            "processing",
        ),
        (
            "POST",
            "/Patient",
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            400,
            "invalid",
        ),
        ("PUT", "/Patient/abc", {"resourceType": "Patient", "id": "xyz"}, 400, "invalid"),
        ("PUT", "/Patient/abc", {"resourceType": "Patient"}, 400, "invalid"),
        ("GET", "/NotAType/1", None, 404, "not-found"),
        ("POST", "/NotAType", {"resourceType": "NotAType"}, 404, "not-found"),
        ("GET", "/Patient/does-not-exist", None, 404, "not-found"),
        ("GET", "/Patient/bad$id", None, 400, "invalid"),
        ("GET", "/Patient/" + "x" * 65, None, 400, "invalid"),
        ("DELETE", "/Patient/nobody", None, 404, "not-found"),
        ("PATCH", "/Patient/nobody", b"[]", 404, "not-found"),
    ],
    ids=[
        "malformed-json",
        "empty-body",
        "not-an-object",
        "invalid-resource",
        "type-mismatch",
        "id-mismatch",
        "update-without-id",
        "unknown-type",
        "create-unknown-type",
        "unknown-id",
        "invalid-id",
        "id-too-long",
        "delete-unknown",
        "patch-unknown",
    ],
)
def test_error_matrix(fhir: FhirClient, method: str, path: str, body, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    ct = "application/json-patch+json" if method == "PATCH" else "application/fhir+json"
    r = fhir.call(method, path, body, content_type=ct)
    assert r.status_code == status, r.get_data(as_text=True)
    oo = outcome(r)
    assert oo["issue"][0]["code"] == code
    assert oo["issue"][0]["diagnostics"]


def test_validation_errors_name_each_element(fhir: FhirClient) -> None:
    r = fhir.call(
        "POST",
        "/Observation",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueQuantity": {"value": "high"},
            "subject": {"reference": 7},
        },
    )
    oo = outcome(r)
    expressions = [e for i in oo["issue"] for e in i.get("expression", [])]
    assert "Observation.valueQuantity.value" in expressions
    assert any(e.startswith("Observation.subject") for e in expressions)


def test_oversized_body_413(app, fhir: FhirClient) -> None:  # type: ignore[no-untyped-def]
    limit = app.config["REHABFHIR_SETTINGS"].max_body_bytes
    r = fhir.call("POST", "/Patient", b" " * (limit + 10))
    assert r.status_code == 413
    assert outcome(r)["issue"][0]["code"] == "too-costly"


def test_history_levels_and_paging(fhir: FhirClient) -> None:
    a = fhir.create(PATIENT)
    fhir.call("PUT", f"/Patient/{a['id']}", {**a, "active": True})
    fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "pain"}})
    inst = fhir.call("GET", f"/Patient/{a['id']}/_history").get_json()
    assert inst["type"] == "history" and inst["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["2", "1"]
    typ = fhir.call("GET", "/Patient/_history").get_json()
    assert len(typ["entry"]) == 2
    system = fhir.call("GET", "/_history?_count=2").get_json()
    assert len(system["entry"]) == 2
    nxt = next(link["url"] for link in system["link"] if link["relation"] == "next")
    assert nxt.startswith("http://testserver/fhir/_history?")
    page2 = fhir.call("GET", nxt.removeprefix("http://testserver/fhir")).get_json()
    assert len(page2["entry"]) == 1
    assert not any(link["relation"] == "next" for link in page2["link"])
    seen = [e["fullUrl"] + e["response"]["etag"] for e in system["entry"] + page2["entry"]]
    assert len(set(seen)) == 3


def test_history_since_and_at(fhir: FhirClient) -> None:
    a = fhir.create(PATIENT)
    v1_time = a["meta"]["lastUpdated"]
    import time

    time.sleep(0.01)
    b = fhir.call("PUT", f"/Patient/{a['id']}", {**a, "active": True}).get_json()
    since = fhir.call("GET", f"/Patient/{a['id']}/_history?_since={b['meta']['lastUpdated']}").get_json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["2"]
    at = fhir.call("GET", f"/Patient/{a['id']}/_history?_at={v1_time}").get_json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["1"]
    assert fhir.call("GET", "/_history?_since=garbage").status_code == 400


def test_capability_statement(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/metadata")
    cap = r.get_json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.3.0"
    types = {res["type"] for res in cap["rest"][0]["resource"]}
    assert {"Patient", "Observation", "CarePlan", "Goal", "Procedure", "QuestionnaireResponse"} <= types
    assert len(types) == 141
    patient = next(res for res in cap["rest"][0]["resource"] if res["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} >= {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "create",
    }
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(cap)


def test_unknown_route_and_method(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/Patient/1/_history/1/extra")
    assert r.status_code == 404 and outcome(r)
    r = fhir.call("POST", "/Patient/1")
    assert r.status_code == 405 and outcome(r)
