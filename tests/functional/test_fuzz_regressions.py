"""Inputs a fuzz run (generated requests on every route, SQLite and PostgreSQL) found answered with a
500, each now a 4xx OperationOutcome naming the element. Every case runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.api.openapi_examples import EXAMPLES
from tests.conftest import FhirClient

pytestmark = pytest.mark.pg

JSON = "application/json"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng"}]}


def outcome(resp: Any, status: int) -> dict[str, Any]:
    """Assert an OperationOutcome with this status; return its first issue."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]  # type: ignore[no-any-return]


# -- JSON types the R4B model library fails on (AttributeError, KeyError) or misreads ---------------


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ({"photo": [{"url": 5}]}, "Patient.photo[0].url"),
        ({"extension": [{"url": "http://x.org/e", "valueUrl": True}]}, "Patient.extension[0].valueUrl"),
        ({"_gender": "5"}, "Patient._gender"),
        ({"gender": "male", "_gender": "1e400"}, "Patient._gender"),
        ({"contained": [{"resourceType": "Nope"}]}, "Patient.contained[0].resourceType"),
        ({"contained": [{"resourceType": 5}]}, "Patient.contained[0].resourceType"),
        (
            {"contained": [{"resourceType": "Patient", "photo": [{"url": 1}]}]},
            "Patient.contained[0].photo[0].url",
        ),
        ({"name": [{"given": ["a", "b"], "_given": [None, "x"]}]}, "Patient.name[0]._given[1]"),
        # a string where an object belongs was parsed as JSON text, passed, and was stored as a string
        ({"name": ['{"family": "x"}']}, "Patient.name[0]"),
        ({"meta": '{"versionId": "1"}'}, "Patient.meta"),
    ],
    ids=[
        "url-number",
        "valueUrl-boolean",
        "primitive-extension-string",
        "primitive-extension-json-number",
        "contained-unknown-type",
        "contained-type-number",
        "contained-url-number",
        "list-primitive-extension-string",
        "humanname-as-json-text",
        "meta-as-json-text",
    ],
)
def test_element_of_the_wrong_json_type_is_400_naming_it(
    fhir: FhirClient, body: dict[str, Any], expression: str
) -> None:
    for method, path in (("POST", "/Patient"), ("PUT", "/Patient/p1")):
        resource = {"resourceType": "Patient", **({"id": "p1"} if method == "PUT" else {}), **body}
        issue = outcome(fhir.call(method, path, resource), 400)
        assert issue["expression"] == [expression]
    assert fhir.call("GET", "/Patient?_summary=count").get_json()["total"] == 0  # nothing stored
    r = fhir.call("POST", "/Patient/$validate", {"resourceType": "Patient", **body})
    assert r.status_code == 200, r.get_data(as_text=True)
    issues = r.get_json()["issue"]
    assert [(i["severity"], i.get("expression")) for i in issues[:1]] == [("error", [expression])]


def test_every_element_of_the_wrong_json_type_is_named(fhir: FhirClient) -> None:
    # a list holding a string item and, after it, an object with a wrong item of its own; a url in a
    # list inside a list (leaving the first out of what the model validates once raised KeyError: 500)
    body = {
        "resourceType": "Patient",
        "name": ["x", {"given": [5]}],
        "contained": [{"resourceType": "Patient", "photo": [{"url": True}]}],
        "photo": [{"url": 1}],
    }
    r = fhir.call("POST", "/Patient", body)
    outcome(r, 400)
    expressions = [i.get("expression") for i in r.get_json()["issue"]]
    expected = [
        ["Patient.contained[0].photo[0].url"],
        ["Patient.name[0]"],
        ["Patient.name[1].given[0]"],
        ["Patient.photo[0].url"],
    ]
    assert expressions == expected
    r = fhir.call("POST", "/Patient/$validate", body)
    assert [i.get("expression") for i in r.get_json()["issue"]] == expected


def test_subscription_with_a_string_payload_extension_is_400(fhir: FhirClient) -> None:
    from server.fhir.subscriptions import topics

    sub = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "x",
        "criteria": topics.TOPICS[0].url,
        "channel": {"type": "rest-hook", "endpoint": "https://127.0.0.1:9/h", "_payload": "1e400"},
    }
    issue = outcome(fhir.call("POST", "/Subscription", sub), 400)
    assert issue["expression"] == ["Subscription.channel._payload"]


def test_bundle_entry_of_an_unknown_resource_type_is_400(fhir: FhirClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "2026-13-45", "id": "x"}}],
    }
    issue = outcome(fhir.call("POST", "/Bundle", bundle), 400)
    assert issue["expression"] == ["Bundle.entry[0].resource.resourceType"]


def test_valid_resources_still_pass(fhir: FhirClient) -> None:
    patient = {
        **PATIENT,
        "name": [{"family": "Ng", "given": ["A", "B"], "_given": [None, {"extension": []}]}],
        "birthDate": "1970-01-01",
        "_birthDate": {"extension": [{"url": "http://x.org/e", "valueUrl": "http://x.org"}]},
        "contained": [{"resourceType": "Organization", "id": "o", "name": "Clinic"}],
        "managingOrganization": {"reference": "#o"},
        "multipleBirthInteger": 2,
    }
    assert fhir.call("PUT", "/Patient/p1", patient).status_code == 201


# -- /rehab -------------------------------------------------------------------------------------------


def test_sensor_series_period_too_large_is_400(fhir: FhirClient) -> None:
    assert fhir.call("PUT", "/Patient/p1", PATIENT).status_code == 201
    body = {**EXAMPLES["/rehab/sensor-series"][1], "patient": "p1"}
    for period in (2**70, 1e300, 3_600_001):  # json, not orjson: orjson does not write 2**70
        r = fhir.call(
            "POST", "/rehab/sensor-series", json.dumps({**body, "period_ms": period}), content_type=JSON
        )
        assert outcome(r, 400)["expression"] == ["period_ms"]
    assert fhir.call("GET", "/Observation?_summary=count").get_json()["total"] == 0
    r = fhir.call("POST", "/rehab/sensor-series", {**body, "period_ms": 3_600_000}, content_type=JSON)
    assert r.status_code == 201, r.get_data(as_text=True)


# -- Bundle entries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_url", [{"a": None}, [[]], 5], ids=["object", "array", "number"])
def test_transaction_entry_full_url_not_a_string_is_400(fhir: FhirClient, full_url: Any) -> None:
    # an object or array fullUrl was used as a dict key while resolving references: TypeError, a 500
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": full_url, "resource": obs, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    issue = outcome(fhir.call("POST", "/", bundle), 400)
    assert issue["expression"] == ["Bundle.entry[1].fullUrl"]
    assert fhir.call("GET", "/Patient?_summary=count").get_json()["total"] == 0
    bundle["type"] = "batch"  # in a batch the entry fails alone
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert statuses == ["201 Created", "400 Bad Request"]


def test_period_at_the_ends_of_the_calendar_is_not_500(fhir: FhirClient) -> None:
    # per-1 (start <= end) widened 0001-01-01 by the time zones and reached the year 10000: OverflowError
    for start, end in (("0001-01-01", "2027"), ("0001", "9999"), ("2026-11-20", "9999-12-31")):
        patient = {
            "resourceType": "Patient",
            "name": [{"family": "E", "period": {"start": start, "end": end}}],
        }
        r = fhir.call("POST", "/Patient", patient)
        assert r.status_code == 201, r.get_data(as_text=True)
    patient = {"resourceType": "Patient", "name": [{"period": {"start": "9999-12-31", "end": "0001-01-01"}}]}
    issue = outcome(fhir.call("POST", "/Patient", patient), 400)
    assert "per-1" in issue["diagnostics"]


def test_recertification_from_year_one_is_not_500(fhir: FhirClient) -> None:
    assert fhir.call("PUT", "/Patient/p1", PATIENT).status_code == 201
    r = fhir.call(
        "POST", "/rehab/episodes", EXAMPLES["/rehab/episodes"][1] | {"patient": "p1"}, content_type=JSON
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    eid = r.get_json()["references"]["episode"][0].split("/")[1]
    cert = {
        "start": "2026-11-20",
        "end": "2026-12-31",
        "visits_per_week": 2,
        "weeks": 6,
        "visits_authorized": 2,
    }
    plan = EXAMPLES["/rehab/plans"][1] | {"patient": "p1", "episode": eid, "certification": cert}
    assert fhir.call("POST", "/rehab/plans", plan, content_type=JSON).status_code == 201
    renewed = cert | {"start": "0001-01-01", "end": "2027-02-15"}
    r = fhir.call("POST", f"/rehab/episodes/{eid}/recertification", renewed, content_type=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)


def test_progress_with_a_home_program_day_long_before_the_plan_is_not_500(fhir: FhirClient) -> None:
    # the week row's start date (plan start + 7 x (week - 1)) fell before 0001-01-01: ValueError, and
    # every later GET progress of the patient answered 500
    assert fhir.call("PUT", "/Patient/p1", PATIENT).status_code == 201
    plan = EXAMPLES["/rehab/plans"][1] | {"patient": "p1"}
    assert fhir.call("POST", "/rehab/plans", plan, content_type=JSON).status_code == 201
    for day in ("0001-01-01", "2026-11-21"):
        done = {"patient": "p1", "date": day, "exercises": [{"exercise": "Bridges", "status": "done"}]}
        r = fhir.call("POST", "/rehab/adherence", done, content_type=JSON)
        assert r.status_code == 201, r.get_data(as_text=True)
    r = fhir.call("GET", "/rehab/patients/p1/progress")
    assert r.status_code == 200, r.get_data(as_text=True)
    (exercise,) = r.get_json()["adherence"][0]["exercises"]
    weeks = {w["week"]: w.get("start") for w in exercise["weeks"]}
    assert weeks[1] == "2026-11-20" and None in weeks.values()


def test_values_longer_than_the_audit_columns_are_audited_not_500(fhir: FhirClient) -> None:
    """A 300-character id or client id used to overflow the audit's varchar columns on PostgreSQL
    (patient 128, resource/client/actor 256) and the request answered 500 "could not be written";
    the searchable columns now keep a prefix (the event's JSON keeps the whole value)."""
    long_id = "x" * 300
    assert fhir.call("GET", f"/Patient/{long_id}").status_code in (400, 404)
    assert fhir.call("GET", f"/rehab/patients/{'x' * 200}/progress").status_code in (400, 404)
    assert fhir.call("DELETE", f"/{long_id}").status_code in (400, 404, 405)
    r = fhir.c.post("/auth/token", data={"grant_type": "client_credentials", "client_id": long_id})
    assert r.status_code in (400, 401), r.get_data(as_text=True)


@pytest.mark.parametrize("request_", ["x", 5, [1], True, None], ids=["str", "int", "list", "bool", "null"])
def test_batch_entry_whose_request_is_not_an_object_is_400(fhir: FhirClient, request_: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": request_}, "not an entry"]}
    r = fhir.call("POST", "/", bundle)
    assert r.status_code < 500, r.get_data(as_text=True)
    if r.status_code == 200:
        assert all(e["response"]["status"].startswith("400") for e in r.get_json()["entry"])


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_batch_entry_put_or_delete_of_audit_event_without_criteria_is_400(
    fhir: FhirClient, method: str
) -> None:
    entry: dict[str, Any] = {"request": {"method": method, "url": "AuditEvent"}}
    if method == "PUT":
        entry["resource"] = {"resourceType": "AuditEvent"}
    r = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert r.status_code == 200, r.get_data(as_text=True)
    status = r.get_json()["entry"][0]["response"]["status"]
    assert status.startswith(("400", "405")), status


def test_audit_export_with_a_bad_date_is_400_before_the_stream(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/AuditEvent/$export-ndjson?date=junk")
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"
