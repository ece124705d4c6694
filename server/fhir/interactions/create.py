"""FHIR create interaction (conditional create via If-None-Exist).

https://hl7.org/fhir/R4B/http.html#create
"""

from __future__ import annotations

from typing import Any

from server.fhir.access import AccessContext
from server.fhir.access import check_write
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import version_headers
from server.fhir.integrity import check_references
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_type
from server.fhir.writes import new_id
from server.fhir.writes import prepare_write
from server.fhir.writes import write_response


def create(
    repo: FhirRepository,
    ctx: AccessContext,
    req: FhirRequest,
    type_: str,
    body: Any = None,
    assigned_id: str | None = None,
) -> FhirResponse:
    """Store a new resource under a server-assigned id; 201 with Location.

    `assigned_id` is the id a transaction chose up front for an entry's urn:uuid.
    """
    check_type(type_)
    ctx.require(type_, "c")
    resource = req.body if body is None else body
    criteria = req.header("if-none-exist")
    if isinstance(resource, dict) and not criteria:
        # The id is part of the index data (a Patient is in its own compartment).
        resource = {**resource, "id": assigned_id or new_id()}
    write = prepare_write(type_, resource)
    check_write(ctx, type_, "c", write.resource)
    with repo.transaction():
        check_references(repo, ctx, req, type_, write.resource)
        if criteria:
            from server.fhir.conditional import create_guarded

            existing, stored = create_guarded(repo, ctx, req, type_, write, criteria)
            if existing is not None:
                headers = version_headers(existing, req.base_url)
                return FhirResponse(200, existing.body, headers)
        else:
            stored = repo.create_resource(type_, write, write.resource["id"])
    return write_response(req, stored, 201)
