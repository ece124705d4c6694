"""The CapabilityStatement declares every interaction and operation the routes serve."""

from __future__ import annotations

import re
from typing import Any

import pytest

from server.fhir import routing
from server.fhir.operations import registry

# The operations are checked below, against the operation registry.
NOT_INTERACTIONS = ("capabilities", "operation")


@pytest.fixture
def statement(app: Any) -> dict[str, Any]:
    r = app.test_client().get("/metadata")
    assert r.status_code == 200
    return r.get_json(force=True)


def test_every_route_is_a_declared_interaction(app: Any, statement: dict[str, Any]) -> None:
    rest = statement["rest"][0]
    system = {i["code"] for i in rest["interaction"]}
    patient = next(e for e in rest["resource"] if e["type"] == "Patient")
    per_type = {i["code"] for i in patient["interaction"]}
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint.startswith("fhir.")}
    assert endpoints == {f"fhir.{route.endpoint}" for route in routing.ROUTES}, "Flask serves the table"
    for route in routing.ROUTES:
        if route.interaction in NOT_INTERACTIONS:
            continue
        codes = ("transaction", "batch") if route.interaction == "transaction" else (route.interaction,)
        for code in codes:
            declared = (
                system if code in ("transaction", "batch", "history-system", "search-system") else per_type
            )
            assert code in declared, (route.endpoint, code)


def test_every_registered_operation_is_declared_at_its_level(statement: dict[str, Any]) -> None:
    rest = statement["rest"][0]
    by_type = {e["type"]: {op["name"] for op in e.get("operation", [])} for e in rest["resource"]}
    system = {op["name"] for op in rest.get("operation", [])}
    for type_, _instance, name in registry.names():
        if type_ == "":
            assert name in system
        elif type_ == "*":
            assert all(name in ops for ops in by_type.values()), name
        else:
            assert name in by_type[type_], (type_, name)


@pytest.mark.parametrize(
    ("type_", "name", "definition"),
    [
        ("Patient", "everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
        ("Observation", "validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate"),
        ("CodeSystem", "lookup", "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"),
        ("ConceptMap", "translate", "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"),
        ("Group", "export", None),
        ("AuditEvent", "verify", "https://rehabfhir.org/fhir/OperationDefinition/AuditEvent-verify"),
    ],
    ids=["everything", "validate", "lookup", "translate", "group-export", "audit-verify"],
)
def test_named_operations(statement: dict[str, Any], type_: str, name: str, definition: str | None) -> None:
    entry = next(e for e in statement["rest"][0]["resource"] if e["type"] == type_)
    ops = [op for op in entry["operation"] if op["name"] == name]
    assert len(ops) == 1
    if definition is not None:
        assert ops[0]["definition"] == definition


def test_system_level_declares_transaction_batch_history_and_export(statement: dict[str, Any]) -> None:
    rest = statement["rest"][0]
    assert [i["code"] for i in rest["interaction"]] == [
        "transaction",
        "batch",
        "history-system",
        "search-system",
    ]
    assert [op["name"] for op in rest["operation"]].count("export") == 1


# -- AuditEvent: declared exactly as served --------------------------------------------------

_EVENT = {
    "resourceType": "AuditEvent",
    "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True, "who": {"display": "another system's user"}}],
    "source": {"observer": {"display": "another system"}},
}


def _concrete(rule: str, id_: str) -> str:
    """A path the rule matches: an existing event's id, its version 1, the $verify operation."""
    path = rule.replace("<type_>", "AuditEvent").replace("<id_>", id_).replace("<vid>", "1")
    path = path.replace("<path:rest>", "_history/1").replace("$<name>", "$verify")
    assert "<" not in path, rule
    return path


def test_audit_event_declares_every_interaction_it_serves_and_no_other(
    app: Any, fhir: Any, statement: dict[str, Any]
) -> None:
    entry = next(e for e in statement["rest"][0]["resource"] if e["type"] == "AuditEvent")
    declared = {i["code"] for i in entry["interaction"]}
    operations = {op["name"] for op in entry["operation"]}
    assert not declared & {"update", "patch", "delete"}  # append-only
    assert "export-ndjson" in operations
    submitted = fhir.create(_EVENT)["id"]
    trail = fhir.call("GET", "/AuditEvent?_count=1").get_json()["entry"][0]["resource"]["id"]
    served: dict[str, list[str]] = {}
    refused: dict[str, list[str]] = {}
    # Every Flask rule an AuditEvent request can reach (those of AuditEvent's own and the
    # per-type ones), on an event of the server's own trail and on a submitted one: what it
    # answers is served; what it refuses is not.
    rules = [
        r
        for r in app.url_map.iter_rules()
        if re.match(r"/(AuditEvent|<type_>)(/|$)", r.rule) and "<target>" not in r.rule
    ]
    assert any(r.rule.startswith("/AuditEvent") for r in rules)
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for id_ in (trail, submitted):
                path = _concrete(rule.rule, id_)
                parts = [p for p in path.split("/") if p]
                named = routing.interaction_of(method, parts).subtype
                body = {**_EVENT, "id": id_} if method in ("POST", "PUT") else None
                r = fhir.call(method, path, body, headers={"Accept": "*/*"})
                seen = f"{method} {path}: {r.status_code}"
                assert r.status_code < 500, seen
                if named == "operation":
                    if r.status_code < 400:
                        assert parts[-1].lstrip("$") in operations, seen
                elif r.status_code < 300:
                    served.setdefault(named, []).append(seen)
                else:
                    refused.setdefault(named, []).append(seen)
    assert set(served) == declared, (served, declared)  # every declared one answers, none else
    for code in ("read", "vread", "history-instance"):  # on the trail and on a submitted event alike
        assert all(any(f"/{id_}" in seen for seen in served[code]) for id_ in (trail, submitted)), code
    assert {"update", "patch", "delete"} <= set(refused), refused


def test_subscription_declares_no_patch_and_no_conditional_update(
    fhir: Any, statement: dict[str, Any]
) -> None:
    """A Subscription is changed only by PUT /Subscription/id (checked again, new handshake)."""
    entry = next(e for e in statement["rest"][0]["resource"] if e["type"] == "Subscription")
    declared = {i["code"] for i in entry["interaction"]}
    assert "patch" not in declared and {"create", "update", "read"} <= declared
    assert entry["conditionalUpdate"] is False
    patch = [{"op": "replace", "path": "/status", "value": "off"}]
    r = fhir.call("PATCH", "/Subscription/any", patch, content_type="application/json-patch+json")
    assert r.status_code == 405 and r.get_json()["resourceType"] == "OperationOutcome"
    r = fhir.call("PUT", "/Subscription?status=active", {"resourceType": "Subscription"})
    assert r.status_code == 405
