"""FHIR capabilities interaction: a CapabilityStatement built from what the server supports.

https://hl7.org/fhir/R4B/http.html#capabilities
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.operations import registry
from server.fhir.resources import resource_types

SOFTWARE_VERSION = "0.1.0"
FHIR_VERSION = "4.3.0"
INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system", "search-system")
# Operations HL7 defines (their OperationDefinition is http://hl7.org/fhir/OperationDefinition/<Type>-<name>);
# any other registered operation is ours.
_STANDARD_OPERATIONS = frozenset({"everything", "validate", "lookup", "translate", "validate-code", "expand"})
_OWN_DEFINITIONS = "https://rehabfhir.org/fhir/OperationDefinition/"

# Contributors (search, auth, operations) add their parts without this module knowing them.
_contributors: list[Callable[[dict[str, Any], FhirRequest], None]] = []


def contribute(
    func: Callable[[dict[str, Any], FhirRequest], None],
) -> Callable[[dict[str, Any], FhirRequest], None]:
    """Register a function that amends the statement (search params, security, operations)."""
    _contributors.append(func)
    return func


def _resource_entry(type_: str) -> dict[str, Any]:
    return {
        "type": type_,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "interaction": [{"code": code} for code in INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical"],
    }


def build(req: FhirRequest) -> dict[str, Any]:
    """Build the CapabilityStatement as a dict."""
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "rehabfhir",
        "kind": "instance",
        "software": {"name": "rehabfhir", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Rehab FHIR backend", "url": req.base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": [_resource_entry(t) for t in resource_types()],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
    for func in _contributors:
        func(statement, req)
    _declare_registered_operations(statement["rest"][0])
    return statement


def _definition(type_: str, name: str) -> str:
    if name in _STANDARD_OPERATIONS:
        return f"http://hl7.org/fhir/OperationDefinition/{type_ if type_ != '*' else 'Resource'}-{name}"
    return f"{_OWN_DEFINITIONS}{type_ or 'system'}-{name}"


def _declare_registered_operations(rest: dict[str, Any]) -> None:
    """Declare every registered operation its contributor did not (each at its level, once)."""
    by_type = {entry["type"]: entry for entry in rest["resource"]}
    for type_, _instance, name in registry.names():
        if type_ == "":
            targets = [rest]
        else:
            targets = list(by_type.values()) if type_ == "*" else [by_type[type_]] if type_ in by_type else []
        for target in targets:
            declared = target.setdefault("operation", [])
            if all(op["name"] != name for op in declared):
                declared.append({"name": name, "definition": _definition(type_, name)})


def capability_statement(req: FhirRequest) -> FhirResponse:
    """Answer GET /metadata."""
    return FhirResponse(200, build(req))
