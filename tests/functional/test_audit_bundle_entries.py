"""Batch and transaction entries are audited with the interaction each entry ran (issue 16, item 6).

The bundle's response names every entry's interaction (routing.run sets it, the handler may
refine it); the audit takes it from there, and knows which entries were audited with their
writes, instead of re-deriving either from the entry's request.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.conftest import FhirClient
from tests.functional.test_audit import events
from tests.functional.test_audit import summary

IDENT = {"system": "urn:mrn", "value": "be-1"}


def _matching_create() -> dict[str, Any]:
    return {
        "resource": {"resourceType": "Patient", "identifier": [IDENT]},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|be-1"},
    }


def _put_create(id_: str) -> dict[str, Any]:
    return {
        "resource": {"resourceType": "Patient", "id": id_, "active": True},
        "request": {"method": "PUT", "url": f"Patient/{id_}"},
    }


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _statuses(r: Any) -> list[str]:
    return [e["response"]["status"].split()[0] for e in r.get_json()["entry"]]


def test_transaction_entries_audited_as_they_ran(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient", "identifier": [IDENT]})
    pref = f"Patient/{p['id']}"
    before = len(events(app))
    bundle = _bundle(
        "transaction",
        _matching_create(),
        _put_create("be-put"),
        {"request": {"method": "GET", "url": pref}},
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert _statuses(r) == ["200", "201", "200"]
    assert sorted(summary(events(app)[before:])) == sorted(
        [
            # found its match: nothing written, audited like the same request outside a bundle
            ("create", "C", 0, f"{pref}/_history/1", pref),
            # update as create: the update interaction ran, audited with its write
            ("update", "U", 0, "Patient/be-put/_history/1", "Patient/be-put"),
            ("read", "R", 0, f"{pref}/_history/1", pref),
        ]
    )


def test_batch_entries_audited_as_they_ran_failures_included(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient", "identifier": [IDENT]})
    pref = f"Patient/{p['id']}"
    before = len(events(app))
    wrong_version = {
        "resource": {"resourceType": "Patient", "id": p["id"]},
        "request": {"method": "PUT", "url": pref, "ifMatch": 'W/"7"'},
    }
    bundle = _bundle(
        "batch",
        _matching_create(),
        _put_create("be-put"),
        wrong_version,
        {"request": {"method": "DELETE", "url": "Patient/be-missing"}},
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert _statuses(r) == ["200", "201", "412", "404"]
    assert sorted(summary(events(app)[before:])) == sorted(
        [
            ("create", "C", 0, f"{pref}/_history/1", pref),
            ("update", "U", 0, "Patient/be-put/_history/1", "Patient/be-put"),
            ("update", "U", 4, pref, pref),
            ("delete", "D", 4, "Patient/be-missing", "Patient/be-missing"),
        ]
    )


def test_failing_entry_fails_the_transaction_and_only_that_is_audited(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient", "identifier": [IDENT]})
    before = len(events(app))
    failing = {
        "resource": {"resourceType": "Observation"},
        "request": {"method": "POST", "url": "Observation"},
    }
    r = fhir.call("POST", "/", _bundle("transaction", _matching_create(), _put_create("be-put"), failing))
    assert r.status_code >= 400
    assert fhir.call("GET", "/Patient/be-put").status_code == 404
    new = events(app)[before:]
    assert summary(new[:1]) == [("transaction", "E", 4, None, None)]
    assert new[0]["query"] == "POST /"
    assert p["id"]


def test_entry_that_wrote_nothing_is_audited_from_the_bundle(fhir: FhirClient, app: Any) -> None:
    """A delete of a deleted resource writes no version: the bundle audits it, as outside a bundle."""
    p = fhir.create({"resourceType": "Patient"})
    pref = f"Patient/{p['id']}"
    assert fhir.call("DELETE", f"/{pref}").status_code in (200, 204)
    before = len(events(app))
    r = fhir.call("POST", "/", _bundle("batch", {"request": {"method": "DELETE", "url": pref}}))
    assert r.status_code == 200 and _statuses(r) == ["204"]
    outside = fhir.call("DELETE", f"/{pref}")
    assert outside.status_code == 204
    in_bundle, alone = summary(events(app)[before:])
    assert in_bundle == alone == ("delete", "D", 0, pref, pref)


def test_absolute_entry_urls_are_audited_as_their_interaction(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient"})
    pref = f"Patient/{p['id']}"
    before = len(events(app))
    r = fhir.call(
        "POST", "/", _bundle("batch", {"request": {"method": "GET", "url": f"http://testserver/fhir/{pref}"}})
    )
    assert r.status_code == 200 and _statuses(r) == ["200"]
    assert summary(events(app)[before:]) == [("read", "R", 0, f"{pref}/_history/1", pref)]


def test_conditional_delete_entry_is_audited_once_with_its_write(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient", "identifier": [IDENT]})
    pref = f"Patient/{p['id']}"
    before = len(events(app))
    entry = {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|be-1"}}
    r = fhir.call("POST", "/", _bundle("transaction", entry))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert summary(events(app)[before:]) == [("delete", "D", 0, f"{pref}/_history/2", pref)]


def test_create_matching_an_earlier_entry_of_the_batch_is_audited_too(fhir: FhirClient, app: Any) -> None:
    created = {
        "resource": {"resourceType": "Patient", "identifier": [IDENT]},
        "request": {"method": "POST", "url": "Patient"},
    }
    r = fhir.call("POST", "/", _bundle("batch", created, _matching_create()))
    assert r.status_code == 200 and _statuses(r) == ["201", "200"]
    ref = "/".join(r.get_json()["entry"][0]["response"]["location"].split("/")[-4:])
    pref = "/".join(ref.split("/")[:2])
    assert summary(events(app)) == [("create", "C", 0, ref, pref), ("create", "C", 0, ref, pref)]


def test_audit_event_entries_run_the_audit_event_routes(fhir: FhirClient, app: Any) -> None:
    """A bundle entry on AuditEvent is served as the same request alone: the trail, the submitter."""
    fhir.create({"resourceType": "Patient"})
    pk = str(events(app)[0]["pk"])
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "another system's user"}}],
        "source": {"observer": {"display": "claimed by the body"}},
    }
    bundle = _bundle(
        "batch",
        {"request": {"method": "GET", "url": f"AuditEvent?_id={pk}"}},
        {"request": {"method": "GET", "url": f"AuditEvent/{pk}/_history/1"}},
        {"resource": event, "request": {"method": "POST", "url": "AuditEvent"}},
        {"request": {"method": "DELETE", "url": f"AuditEvent/{pk}"}},
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert _statuses(r) == ["200", "200", "201", "405"]
    found, version, made, _ = r.get_json()["entry"]
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [pk]  # the trail's search
    assert version["resource"]["id"] == pk  # a trail event's version 1
    observer = made["resource"]["source"]["observer"]  # recorded as submitted by the token's client
    assert observer["identifier"]["system"].endswith("/auth/clients")


def _patch_entry(ref: str, operations: bytes) -> dict[str, Any]:
    data = base64.b64encode(operations).decode()
    resource = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    return {"request": {"method": "PATCH", "url": ref}, "resource": resource}


def test_patch_then_update_of_one_resource_audited_as_each(fhir: FhirClient, app: Any) -> None:
    """Each write names the interaction that made it: never guessed from the request or the Bundle."""
    p = fhir.create({"resourceType": "Patient"})
    pref = f"Patient/{p['id']}"
    before = len(events(app))
    for kind in ("batch", "transaction"):
        bundle = _bundle(
            kind,
            _patch_entry(pref, b'[{"op":"add","path":"/active","value":true}]'),
            {"resource": {**p, "gender": "other"}, "request": {"method": "PUT", "url": pref}},
        )
        r = fhir.call("POST", "/", bundle)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert _statuses(r) == ["200", "200"], r.get_data(as_text=True)
    rows = summary(events(app)[before:])
    assert sorted(rows) == sorted(
        [
            ("patch", "U", 0, f"{pref}/_history/2", pref),
            ("update", "U", 0, f"{pref}/_history/3", pref),
            ("patch", "U", 0, f"{pref}/_history/4", pref),
            ("update", "U", 0, f"{pref}/_history/5", pref),
        ]
    ), rows
