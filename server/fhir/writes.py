"""Shared steps of the write interactions: validation, index data, Prefer handling.

https://hl7.org/fhir/R4B/http.html#ops
"""

from __future__ import annotations

import uuid
from typing import Any

from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import version_headers
from server.fhir.outcomes import information
from server.fhir.repository import StoredResource
from server.fhir.repository import WriteRequest
from server.fhir.resources import validate
from server.fhir.validation import enforce


def new_id() -> str:
    """A server-assigned logical id."""
    return str(uuid.uuid4())


def prepare_write(type_: str, resource: Any) -> WriteRequest:
    """Validate the resource and derive its search index rows and compartments.

    Every write goes through here: the model (structure, types), then required bindings,
    error invariants and reference target types (server.fhir.validation).
    """
    from server.fhir.search import indexing

    checked = validate(type_, resource)
    enforce(type_, checked)
    return indexing.prepare(checked)


def write_response(req: FhirRequest, stored: StoredResource, status: int) -> FhirResponse:
    """Answer a create/update/patch as Prefer: return= asks (representation by default)."""
    headers = version_headers(stored, req.base_url)
    wanted = req.prefer.get("return", "representation")
    if wanted == "minimal":
        return FhirResponse(status, None, headers)
    if wanted == "operationoutcome":
        verb = "created" if status == 201 else "updated"
        message = f"{stored.type}/{stored.id} {verb}, version {stored.version}"
        return FhirResponse(status, information(message), headers)
    return FhirResponse(status, stored.body, headers)
