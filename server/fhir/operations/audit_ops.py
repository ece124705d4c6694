"""AuditEvent/$verify: check the audit hash chain and its signed checkpoints.

Answers a Parameters resource with result = "intact" or "broken", the number of records
checked and, when broken, the first broken record and why. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from typing import Any

from server.errors import ForbiddenError
from server.errors import NotSupportedError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.operations.registry import register
from server.fhir.repository import FhirRepository


def _parameter(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"name": name, "valueInteger": value}
    return {"name": name, "valueString": str(value)}


@register("AuditEvent", "verify", instance=False)
def verify(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Verify the audit chain (auditors only)."""
    if not ctx.can("AuditEvent", "r") or ctx.patient is not None:
        raise ForbiddenError(
            "$verify needs an auditor scope (user|system/AuditEvent.rs)", message_id="MSG_FORBIDDEN"
        )
    check = getattr(repo, "verify_audit", None)
    if check is None:
        raise NotSupportedError("Auditing is switched off on this server (REHABFHIR_AUDIT=off)")
    verdict = check()
    body = {
        "resourceType": "Parameters",
        "parameter": [_parameter(k, v) for k, v in verdict.items() if v is not None],
    }
    return FhirResponse(200, body)
