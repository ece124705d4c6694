"""Referential integrity (issue 13, item 3): references to this server resolve; referenced resources stay."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import FhirClient
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code

BASE = "http://testserver/fhir"


def obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "knee flexion"}, **extra}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


@contextlib.contextmanager
def settings(app: Any, **changes: Any) -> Iterator[None]:
    """Run with some settings changed (the app reads them per request)."""
    before = app.config["REHABFHIR_SETTINGS"]
    app.config["REHABFHIR_SETTINGS"] = dataclasses.replace(before, **changes)
    try:
        yield
    finally:
        app.config["REHABFHIR_SETTINGS"] = before


def assert_unresolved(r: Any, path: str, target: str) -> dict[str, Any]:
    assert r.status_code == 422, r.get_data(as_text=True)
    oo = r.get_json()
    found = [i for i in oo["issue"] if i["code"] == "not-found"]
    assert [i["expression"] for i in found] == [[path]]
    assert found[0]["diagnostics"] == f"{path} refers to {target}, which is not a resource of this server"
    assert found[0]["details"]["coding"][0]["code"] == "MSG_REFERENCE_NOT_FOUND"
    return oo


def count(fhir: FhirClient, type_: str) -> int:
    return int(fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"])


@pytest.mark.parametrize(
    "target",
    ["Patient/nobody", f"{BASE}/Patient/nobody", "Patient/p1/_history/2"],
    ids=["relative", "absolute-own-base", "missing-version"],
)
def test_create_update_patch_refuse_a_dangling_reference(fhir: FhirClient, target: str) -> None:
    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    assert_unresolved(
        fhir.call("POST", "/Observation", obs(subject=ref(target))), "Observation.subject.reference", target
    )
    r = fhir.call("PUT", "/Observation/o1", obs(id="o1", subject=ref(target)))
    assert_unresolved(r, "Observation.subject.reference", target)
    assert count(fhir, "Observation") == 0
    fhir.call("PUT", "/Observation/o1", obs(id="o1"))
    ops = [{"op": "add", "path": "/performer", "value": [ref(target)]}]
    r = fhir.call("PATCH", "/Observation/o1", ops, content_type="application/json-patch+json")
    assert_unresolved(r, "Observation.performer[0].reference", target)


@pytest.mark.parametrize(
    "target",
    [
        "Patient/p1",
        f"{BASE}/Patient/p1",
        "Patient/p1/_history/1",
        "http://other.example/fhir/Patient/nobody",
        "urn:uuid:0b4c8e1c-7a8b-4a4e-9c5c-3f6f0b8e2d11",
    ],
    ids=["relative", "absolute-own-base", "version", "other-server", "urn"],
)
def test_resolving_and_foreign_references_are_stored(fhir: FhirClient, target: str) -> None:
    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    stored = fhir.create(obs(subject=ref(target)))
    assert stored["subject"] == ref(target)


def test_contained_and_self_references_resolve(fhir: FhirClient) -> None:
    contained = obs(contained=[{"resourceType": "Patient", "id": "c"}], subject=ref("#c"))
    assert fhir.create(contained)["subject"] == ref("#c")
    r = fhir.call("PUT", "/Observation/self", obs(id="self", hasMember=[ref("Observation/self")]))
    assert r.status_code == 201, r.get_data(as_text=True)


def test_a_deleted_target_does_not_resolve(fhir: FhirClient) -> None:
    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    assert fhir.call("DELETE", "/Patient/p1").status_code == 204
    r = fhir.call("POST", "/Observation", obs(subject=ref("Patient/p1")))
    assert_unresolved(r, "Observation.subject.reference", "Patient/p1")


def test_every_dangling_reference_is_named(fhir: FhirClient) -> None:
    body = obs(subject=ref("Patient/a"), performer=[ref("Practitioner/b"), ref("Practitioner/b")])
    r = fhir.call("POST", "/Observation", body)
    assert r.status_code == 422
    found = [(i["expression"], i["diagnostics"].split(" refers to ")[1]) for i in r.get_json()["issue"][1:]]
    assert found == [
        (["Observation.subject.reference"], "Patient/a, which is not a resource of this server"),
        (["Observation.performer[0].reference"], "Practitioner/b, which is not a resource of this server"),
        (["Observation.performer[1].reference"], "Practitioner/b, which is not a resource of this server"),
    ]


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_a_transaction_resolves_within_itself_first(fhir: FhirClient) -> None:
    urn = "urn:uuid:6f1f6d47-2c9b-4a8e-8d0e-5e0d1a4c9b01"
    bundle = transaction(
        # The POSTs run before the PUT: Patient/p2 only exists once the PUT has run.
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref(urn))},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref("Patient/p2"))},
        {
            "fullUrl": urn,
            "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient"},
        },
        {
            "request": {"method": "PUT", "url": "Patient/p2"},
            "resource": {"resourceType": "Patient", "id": "p2"},
        },
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [e["response"]["status"] for e in r.get_json()["entry"]] == ["201 Created"] * 4
    assert count(fhir, "Observation") == 2


def test_a_transaction_asks_once_per_target(fhir: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries naming one Patient share its answer; a target the bundle deletes is asked each time."""
    from server.fhir import integrity

    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    fhir.call("PUT", "/Patient/p2", {"resourceType": "Patient", "id": "p2"})
    asked: list[tuple[str, str]] = []
    plain = integrity.resolves

    def counted(repo: Any, ctx: Any, type_: str, id_: str, version: Any) -> bool:
        asked.append((type_, id_))
        return plain(repo, ctx, type_, id_, version)

    monkeypatch.setattr(integrity, "resolves", counted)
    entries = [
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref("Patient/p1"))}
        for _ in range(5)
    ]
    r = fhir.call("POST", "/", transaction(*entries))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert asked == [("Patient", "p1")]
    asked.clear()
    entries = [
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref("Patient/p1"))},
        {"request": {"method": "DELETE", "url": "Patient/p2"}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(focus=[ref("Patient/p2")])},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(focus=[ref("Patient/p2")])},
    ]
    r = fhir.call("POST", "/", transaction(*entries))
    assert r.status_code == 422, r.get_data(as_text=True)  # p2 is gone once the bundle's DELETE ran
    assert asked == [("Patient", "p1"), ("Patient", "p2")]  # p2 asked, not taken from a shared answer


def test_a_transaction_with_a_dangling_reference_fails_whole(fhir: FhirClient) -> None:
    bundle = transaction(
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref("Patient/nobody"))},
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 422, r.get_data(as_text=True)
    first = r.get_json()["issue"][0]
    assert first["expression"] == ["Bundle.entry[1]", "Observation.subject.reference"]
    assert first["diagnostics"].startswith("Bundle.entry[1] (POST Observation): ")
    assert count(fhir, "Patient") == 0


def test_a_batch_fails_only_the_dangling_entry(fhir: FhirClient) -> None:
    bundle = transaction(
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs(subject=ref("Patient/nobody"))},
        kind="batch",
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200
    entries = r.get_json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "422 Unprocessable Entity"]
    issue = entries[1]["response"]["outcome"]["issue"][1]
    assert (issue["code"], issue["expression"]) == ("not-found", ["Observation.subject.reference"])
    assert count(fhir, "Patient") == 1


def test_deleting_a_referenced_resource_is_409_naming_the_referrers(fhir: FhirClient) -> None:
    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    fhir.call("PUT", "/Observation/o1", obs(id="o1", subject=ref("Patient/p1")))
    fhir.call(
        "PUT",
        "/Encounter/e1",
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": ref("Patient/p1"),
        },
    )
    r = fhir.call("DELETE", "/Patient/p1")
    assert r.status_code == 409, r.get_data(as_text=True)
    first = r.get_json()["issue"][0]
    assert first["code"] == "conflict"
    assert first["diagnostics"] == (
        "Patient/p1 is referenced by Observation/o1, Encounter/e1; delete or change those first"
    )
    assert fhir.call("GET", "/Patient/p1").status_code == 200
    r = fhir.call("DELETE", "/Patient?_id=p1")
    assert r.status_code == 409
    # A transaction that deletes the referrers too (or changes them) may delete the target.
    bundle = transaction(
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Observation/o1"}},
        {
            "request": {"method": "PUT", "url": "Encounter/e1"},
            "resource": {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"code": "AMB"},
            },
        },
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert fhir.call("GET", "/Patient/p1").status_code == 410


def test_a_transaction_cannot_keep_a_reference_to_what_it_deletes(fhir: FhirClient) -> None:
    fhir.call("PUT", "/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    fhir.call("PUT", "/Observation/o1", obs(id="o1", subject=ref("Patient/p1")))
    bundle = transaction(
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {
            "request": {"method": "PUT", "url": "Observation/o1"},
            "resource": obs(id="o1", subject=ref("Patient/p1")),
        },
    )
    r = fhir.call("POST", "/", bundle)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert r.get_json()["issue"][0]["expression"] == ["Bundle.entry[1]", "Observation.subject.reference"]
    assert fhir.call("GET", "/Patient/p1").status_code == 200


def test_settings_switch_both_rules_off(app: Any, fhir: FhirClient) -> None:
    with settings(app, referential_integrity=False):
        stored = fhir.create(obs(subject=ref("Patient/later")))
    fhir.call("PUT", "/Patient/later", {"resourceType": "Patient", "id": "later"})
    assert fhir.call("DELETE", "/Patient/later").status_code == 409
    with settings(app, delete_referenced=True):
        assert fhir.call("DELETE", "/Patient/later").status_code == 204
    assert fhir.call("GET", f"/Observation/{stored['id']}").get_json()["subject"] == ref("Patient/later")


def patient_token(app: Any, patient_id: str) -> str:
    """A patient's token (patient/*.cruds) bound to Patient/patient_id, by the authorization code flow."""
    add_user(app, f"pat-{patient_id}", "patient", f"Patient/{patient_id}")
    scope = "launch/patient openid fhirUser patient/*.cruds"
    client_id, _ = add_app(app, scope)
    c = app.test_client()
    verifier = secrets.token_urlsafe(48)
    params = authorize_params(client_id, scope, verifier)
    code = get_code(c, params, f"pat-{patient_id}")["code"]
    return str(exchange(c, client_id, code, verifier).get_json()["access_token"])


def test_a_patient_writer_cannot_probe_other_patients_ids(app: Any, fhir: FhirClient) -> None:
    fhir.call("PUT", "/Patient/a", {"resourceType": "Patient", "id": "a"})
    fhir.call("PUT", "/Patient/b", {"resourceType": "Patient", "id": "b"})
    fhir.call("PUT", "/Observation/mine", obs(id="mine", subject=ref("Patient/a")))
    fhir.call("PUT", "/Observation/theirs", obs(id="theirs", subject=ref("Patient/b")))
    me = FhirClient(app.test_client(), patient_token(app, "a"))
    answers = {}
    for target in ("Observation/theirs", "Observation/nothing"):
        r = me.call("POST", "/Observation", obs(subject=ref("Patient/a"), derivedFrom=[ref(target)]))
        oo = assert_unresolved(r, "Observation.derivedFrom[0].reference", target)
        answers[target] = (r.status_code, oo["issue"][0]["diagnostics"].replace(target, "X"))
    assert answers["Observation/theirs"] == answers["Observation/nothing"]  # existence does not show
    r = me.call("POST", "/Observation", obs(subject=ref("Patient/a"), derivedFrom=[ref("Observation/mine")]))
    assert r.status_code == 201, r.get_data(as_text=True)
