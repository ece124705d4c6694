"""The CapabilityStatement declares every interaction and operation the routes serve."""

from __future__ import annotations

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
