"""Validation to the specification beyond the model: bindings, invariants, reference targets.

https://hl7.org/fhir/R4B/validation.html

`check()` walks a resource once with the element definitions of R4B (validation.json) and
returns OperationOutcome issues; `enforce()` raises on the errors and is called by every write
(server.fhir.writes.prepare_write). Warnings (extensible/preferred bindings, best-practice
invariants) are only computed when asked for, by $validate. A resource claiming a profile the
server holds (meta.profile) is also checked against it (server.fhir.validation.profiles); an
unknown claimed profile is only a warning, in $validate.
"""

from __future__ import annotations

from typing import Any

from server.errors import BusinessRuleError
from server.errors import ValidationFailedError
from server.fhir.validation import profiles
from server.fhir.validation.walker import check as check_base

__all__ = ["check", "enforce"]


def check(
    type_: str, resource: dict[str, Any], *, warnings: bool = False, profiles_: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Return the issues of a resource that passed the model: the base R4B checks, then its profiles.

    `profiles_` adds profiles to check against besides those the resource claims ($validate?profile=).
    """
    issues = check_base(type_, resource, warnings=warnings)
    issues += profiles.claimed_issues(type_, resource, extra=profiles_, warnings=warnings)
    return issues


def enforce(type_: str, resource: dict[str, Any]) -> None:
    """Raise ValidationFailedError listing every error-severity issue of the resource."""
    base = check_base(type_, resource)
    issues = base + profiles.claimed_issues(type_, resource)
    if not issues:
        return
    first = issues[0]
    error = ValidationFailedError if base else BusinessRuleError  # 400 for the base rules, 422 profiles
    raise error(
        f"{type_} failed validation: {len(issues)} error(s); first: {first['diagnostics']}",
        expression=first.get("expression", ()),
        issues=issues,
        message_id="MSG_VALIDATION_FAILED",
    )
