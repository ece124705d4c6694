"""Patient/$everything: compartment plus referenced resources, _since, _type, _count and paging."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import FhirClient


def _record(fhir: FhirClient) -> dict[str, Any]:
    org = fhir.create({"resourceType": "Organization", "name": "Rehab Clinic"})
    doc = fhir.create({"resourceType": "Practitioner", "name": [{"family": "Physio"}]})
    loc = fhir.create({"resourceType": "Location", "name": "Gym 2"})
    med = fhir.create({"resourceType": "Medication", "code": {"text": "ibuprofen"}})
    pat = fhir.create(
        {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org['id']}"}}
    )
    other = fhir.create({"resourceType": "Patient", "name": [{"family": "Other"}]})
    ref = {"reference": f"Patient/{pat['id']}"}
    enc = fhir.create(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": ref,
            "participant": [{"individual": {"reference": f"Practitioner/{doc['id']}"}}],
            "location": [{"location": {"reference": f"Location/{loc['id']}"}}],
        }
    )
    obs = [
        fhir.create(
            {"resourceType": "Observation", "status": "final", "code": {"text": f"pain {i}"}, "subject": ref}
        )
        for i in range(3)
    ]
    mr = fhir.create(
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": ref,
            "medicationReference": {"reference": f"Medication/{med['id']}"},
        }
    )
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "not mine"},
            "subject": {"reference": f"Patient/{other['id']}"},
        }
    )
    fhir.create({"resourceType": "Practitioner", "name": [{"family": "Unrelated"}]})
    return {
        "org": org,
        "doc": doc,
        "loc": loc,
        "med": med,
        "pat": pat,
        "enc": enc,
        "obs": obs,
        "mr": mr,
        "other": other,
    }


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


def test_everything_returns_compartment_and_referenced(fhir: FhirClient) -> None:
    rec = _record(fhir)
    r = fhir.call("GET", f"/Patient/{rec['pat']['id']}/$everything")
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()
    assert out["resourceType"] == "Bundle" and out["type"] == "searchset"
    expected = {
        f"Patient/{rec['pat']['id']}",
        f"Encounter/{rec['enc']['id']}",
        f"MedicationRequest/{rec['mr']['id']}",
        f"Organization/{rec['org']['id']}",
        f"Practitioner/{rec['doc']['id']}",
        f"Location/{rec['loc']['id']}",
        f"Medication/{rec['med']['id']}",
        *(f"Observation/{o['id']}" for o in rec["obs"]),
    }
    assert _ids(out) == expected
    assert out["total"] == len(expected)
    assert all(
        e["fullUrl"] == f"http://testserver/fhir/{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in out["entry"]
    )


def test_everything_type_since_and_post(fhir: FhirClient) -> None:
    rec = _record(fhir)
    pid = rec["pat"]["id"]
    out = fhir.call("GET", f"/Patient/{pid}/$everything?_type=Observation,Practitioner").get_json()
    assert _ids(out) == {f"Observation/{o['id']}" for o in rec["obs"]} | {f"Practitioner/{rec['doc']['id']}"}
    time.sleep(0.01)
    later = fhir.call(
        "PUT", f"/Observation/{rec['obs'][0]['id']}", {**rec["obs"][0], "status": "amended"}
    ).get_json()
    since = later["meta"]["lastUpdated"]
    out = fhir.call("GET", f"/Patient/{pid}/$everything?_since={since}").get_json()
    assert _ids(out) == {f"Observation/{rec['obs'][0]['id']}"}
    params = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Encounter"}]}
    r = fhir.call("POST", f"/Patient/{pid}/$everything", params)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert _ids(r.get_json()) == {f"Encounter/{rec['enc']['id']}"}


def test_everything_pages_with_next_links(fhir: FhirClient) -> None:
    rec = _record(fhir)
    pid = rec["pat"]["id"]
    first = fhir.call("GET", f"/Patient/{pid}/$everything?_count=4").get_json()
    assert first["total"] == 10 and len(first["entry"]) == 4
    seen, page = _ids(first), first
    while True:
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(f"http://testserver/fhir/Patient/{pid}/$everything?")
        page = fhir.call("GET", nxt[0].replace("http://testserver/fhir", "")).get_json()
        assert not (_ids(page) & seen)
        seen |= _ids(page)
    assert len(seen) == 10


def test_everything_errors(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/Patient/nobody/$everything")
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"
    pat = fhir.create({"resourceType": "Patient"})
    r = fhir.call("GET", f"/Patient/{pat['id']}/$everything?_type=Nonsense")
    assert r.status_code == 400 and "_type" in r.get_json()["issue"][0]["diagnostics"]
    r = fhir.call("GET", f"/Patient/{pat['id']}/$everything?_since=yesterday")
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["_since"]
    r = fhir.call("GET", f"/Patient/{pat['id']}/$everything?_count=-1")
    assert r.status_code == 400
    fhir.call("DELETE", f"/Patient/{pat['id']}")
    r = fhir.call("GET", f"/Patient/{pat['id']}/$everything")
    assert r.status_code == 410
    r = fhir.call("GET", "/Observation/x/$everything")
    assert r.status_code == 404
