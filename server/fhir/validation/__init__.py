"""Validation to the specification beyond the model: bindings, invariants, reference targets.

https://hl7.org/fhir/R4B/validation.html

`check()` walks a resource once with the element definitions of R4B (validation.json) and
returns OperationOutcome issues; `enforce()` raises on the errors and is called by every write
(server.fhir.writes.prepare_write). Warnings (extensible/preferred bindings, best-practice
invariants) are only computed when asked for, by $validate.
"""

from __future__ import annotations

from typing import Any

from server.errors import ValidationFailedError
from server.fhir.validation.walker import check

__all__ = ["check", "enforce"]


def enforce(type_: str, resource: dict[str, Any]) -> None:
    """Raise ValidationFailedError listing every error-severity issue of the resource."""
    issues = check(type_, resource)
    if not issues:
        return
    first = issues[0]
    raise ValidationFailedError(
        f"{type_} failed validation: {len(issues)} error(s); first: {first['diagnostics']}",
        expression=first.get("expression", ()),
        issues=issues,
        message_id="MSG_VALIDATION_FAILED",
    )
