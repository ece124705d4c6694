"""Transaction and batch Bundles: atomicity, ordering, urn:uuid and conditional references."""

from __future__ import annotations

import base64
import json
import threading

import requests

from tests.conftest import FhirClient


def tx(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post(full_url: str, resource: dict, **request: str) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }


def count(fhir: FhirClient, type_: str) -> int:
    return fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"]


def test_transaction_resolves_its_own_urn_uuids(fhir: FhirClient) -> None:
    bundle = tx(
        post(
            "urn:uuid:obs",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "pain"},
                "subject": {"reference": "urn:uuid:pat"},
                "extension": [{"url": "http://x/ext", "valueReference": {"reference": "urn:uuid:pat"}}],
            },
        ),
        post("urn:uuid:pat", {"resourceType": "Patient", "name": [{"family": "Tx"}]}),
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()
    assert out["type"] == "transaction-response"
    obs_entry, pat_entry = out["entry"]
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    pid = pat_entry["resource"]["id"]
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert obs_entry["resource"]["extension"][0]["valueReference"]["reference"] == f"Patient/{pid}"
    assert pat_entry["response"]["location"].endswith(f"/Patient/{pid}/_history/1")
    assert pat_entry["response"]["etag"] == 'W/"1"'
    assert pat_entry["fullUrl"] == f"http://testserver/fhir/Patient/{pid}"
    stored = fhir.call("GET", f"/Observation/{obs_entry['resource']['id']}").get_json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"


def test_failing_transaction_leaves_nothing_behind(fhir: FhirClient) -> None:
    keep = fhir.create({"resourceType": "Patient", "name": [{"family": "Keep"}]})
    bundle = tx(
        post("urn:uuid:a", {"resourceType": "Patient", "name": [{"family": "Gone"}]}),
        {"request": {"method": "DELETE", "url": f"Patient/{keep['id']}"}},
        {
            "resource": {**keep, "gender": "other"},
            "request": {"method": "PUT", "url": f"Patient/{keep['id']}"},
        },
        post(
            "urn:uuid:b",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": "high"},
            },
        ),
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 400  # the entry fails basic validation (R4B http.html)
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[3]" in oo["issue"][0]["diagnostics"]
    assert oo["issue"][0]["expression"][0] == "Bundle.entry[3]"
    assert count(fhir, "Patient") == 1
    current = fhir.call("GET", f"/Patient/{keep['id']}").get_json()
    assert current["meta"]["versionId"] == "1" and "gender" not in current
    assert count(fhir, "Observation") == 0


def test_transaction_order_delete_post_put_get(fhir: FhirClient) -> None:
    old = fhir.create({"resourceType": "Patient", "name": [{"family": "Old"}]})
    bundle = tx(
        {"request": {"method": "GET", "url": "Patient?family=New"}},
        {
            "resource": {"resourceType": "Patient", "id": "fixed", "name": [{"family": "New"}]},
            "request": {"method": "PUT", "url": "Patient/fixed"},
        },
        post("urn:uuid:n", {"resourceType": "Patient", "name": [{"family": "New"}]}),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    )
    out = fhir.call("POST", "/", bundle).get_json()
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    searchset = out["entry"][0]["resource"]
    assert searchset["type"] == "searchset" and searchset["total"] == 2  # GET ran last


def test_conditional_entries(fhir: FhirClient) -> None:
    ident = {"system": "urn:mrn", "value": "42"}
    first = tx(
        post(
            "urn:uuid:p",
            {"resourceType": "Patient", "identifier": [ident]},
            ifNoneExist="identifier=urn:mrn|42",
        ),
        post(
            "urn:uuid:o",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:p"},
            },
        ),
    )
    a = fhir.call("POST", "/", first).get_json()
    b = fhir.call("POST", "/", first).get_json()
    assert a["entry"][0]["response"]["status"] == "201 Created"
    assert b["entry"][0]["response"]["status"] == "200 OK"
    pid = a["entry"][0]["resource"]["id"]
    assert b["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert count(fhir, "Patient") == 1
    cond_ref = tx(
        post(
            "urn:uuid:x",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "y"},
                "subject": {"reference": "Patient?identifier=urn:mrn|42"},
            },
        )
    )
    out = fhir.call("POST", "/", cond_ref).get_json()
    assert out["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    missing = tx(
        post(
            "urn:uuid:y",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "y"},
                "subject": {"reference": "Patient?identifier=urn:mrn|nobody"},
            },
        )
    )
    r = fhir.call("POST", "/", missing)
    assert r.status_code == 412 and "matches 0" in r.get_json()["issue"][0]["diagnostics"]
    update = tx(
        {
            "resource": {"resourceType": "Patient", "identifier": [ident], "active": True},
            "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|42"},
        }
    )
    out = fhir.call("POST", "/", update).get_json()
    assert out["entry"][0]["response"]["status"] == "200 OK"
    assert out["entry"][0]["resource"]["id"] == pid and out["entry"][0]["resource"]["active"] is True
    stale = tx(
        {
            "resource": {"resourceType": "Patient", "id": pid},
            "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"1"'},
        }
    )
    assert fhir.call("POST", "/", stale).status_code == 412


def test_transaction_patch_entry(fhir: FhirClient) -> None:
    pid = fhir.create({"resourceType": "Patient", "gender": "female"})["id"]
    data = base64.b64encode(
        json.dumps([{"op": "replace", "path": "/gender", "value": "male"}]).encode()
    ).decode()
    bundle = tx(
        {
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": data,
            },
            "request": {"method": "PATCH", "url": f"Patient/{pid}"},
        }
    )
    out = fhir.call("POST", "/", bundle).get_json()
    assert out["entry"][0]["resource"]["gender"] == "male"


def test_batch_entries_are_independent(fhir: FhirClient) -> None:
    pid = fhir.create({"resourceType": "Patient"})["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": "B"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/nope"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "valueQuantity": {"value": "high"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "FROB", "url": "Patient"}},
        ],
    }
    out = fhir.call("POST", "/", bundle).get_json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == [
        "201 Created",
        "404 Not Found",
        "400 Bad Request",
        "200 OK",
        "400 Bad Request",
    ]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert count(fhir, "Patient") == 2


def test_bundle_errors(app, fhir: FhirClient) -> None:  # type: ignore[no-untyped-def]
    assert fhir.call("POST", "/", {"resourceType": "Patient"}).status_code == 400
    assert fhir.call("POST", "/", {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    limit = app.config["REHABFHIR_SETTINGS"].max_bundle_entries
    big = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient"}}] * (limit + 1),
    }
    r = fhir.call("POST", "/", big)
    assert r.status_code == 413 and r.get_json()["issue"][0]["code"] == "too-costly"


def test_concurrent_identical_conditional_transactions(live_server: str, live_bearer: dict[str, str]) -> None:
    bundle = tx(
        post(
            "urn:uuid:p",
            {"resourceType": "Patient", "identifier": [{"system": "urn:c", "value": "1"}]},
            ifNoneExist="identifier=urn:c|1",
        )
    )
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        r = requests.post(
            live_server + "/",
            json=bundle,
            timeout=60,
            headers={"Content-Type": "application/fhir+json", **live_bearer},
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    found = requests.get(live_server + "/Patient?identifier=urn:c|1", headers=live_bearer, timeout=30).json()
    assert found["total"] == 1


def test_concurrent_identical_conditional_plain_creates(
    live_server: str, live_bearer: dict[str, str]
) -> None:
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    headers = {
        "Content-Type": "application/fhir+json",
        "If-None-Exist": "identifier=urn:plain|16",
        **live_bearer,
    }

    def creator() -> None:
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:plain", "value": "16"}]}
        barrier.wait()
        statuses.append(
            requests.post(live_server + "/Patient", json=body, headers=headers, timeout=60).status_code
        )

    threads = [threading.Thread(target=creator) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 15 + [201]
    found = requests.get(
        live_server + "/Patient?identifier=urn:plain|16", headers=live_bearer, timeout=30
    ).json()
    assert found["total"] == 1


def test_a_large_transaction_is_stored_and_indexed_whole(fhir: FhirClient) -> None:
    """Enough rows per table that PostgreSQL sends them by COPY: every one is stored and searchable."""
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Bulk"}]})
    n = 90
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
            "request": {"method": "POST", "url": "Observation"},
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
                "subject": {"reference": f"Patient/{patient['id']}"},
                "effectiveDateTime": f"2026-01-{1 + i % 28:02d}",
                "valueQuantity": {
                    "value": i,
                    "unit": "{score}",
                    "system": "http://unitsofmeasure.org",
                    "code": "{score}",
                },
            },
        }
        for i in range(n)
    ]
    r = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    query = f"/Observation?patient={patient['id']}&code=http://loinc.org|72514-3&value-quantity=ge45&_summary=count"
    assert fhir.call("GET", query).get_json()["total"] == n - 45
    assert fhir.call("GET", "/Observation?date=2026-01-01&_summary=count").get_json()["total"] == len(
        range(0, n, 28)
    )
    again = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert again.status_code == 200  # new ids each time: nothing collides
    assert (
        fhir.call("GET", f"/Observation?patient={patient['id']}&_summary=count").get_json()["total"] == 2 * n
    )
