"""OperationOutcome: the only place one is built.

https://hl7.org/fhir/R4B/operationoutcome.html
"""

from __future__ import annotations

from typing import Any

from server.errors import FhirError

MESSAGE_SYSTEM = "https://rehabfhir.org/fhir/CodeSystem/message-id"


def issue(
    severity: str,
    code: str,
    diagnostics: str,
    expression: tuple[str, ...] | list[str] = (),
    message_id: str | None = None,
) -> dict[str, Any]:
    """Build one OperationOutcome.issue."""
    out: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if message_id:
        out["details"] = {"coding": [{"system": MESSAGE_SYSTEM, "code": message_id}]}
    if expression:
        out["expression"] = list(expression)
    return out


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap issues into an OperationOutcome resource."""
    return {"resourceType": "OperationOutcome", "issue": issues}


def to_operation_outcome(err: FhirError) -> dict[str, Any]:
    """Render an error (with any extra issues it carries) as an OperationOutcome."""
    issues = [issue(err.severity, err.issue_code, err.diagnostics, err.expression, err.message_id)]
    issues.extend(dict(i) for i in err.issues)
    return operation_outcome(issues)


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome with one informational issue (Prefer: return=OperationOutcome)."""
    return operation_outcome([issue("information", code, diagnostics)])
