"""FHIR update interaction (PUT; update-as-create with a client-assigned id).

https://hl7.org/fhir/R4B/http.html#update
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.errors import InvalidRequestError
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.fhir.access import check_write
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import parse_etag
from server.fhir.integrity import check_references
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.writes import prepare_write
from server.fhir.writes import write_response


def check_body_id(resource: Any, id_: str) -> None:
    """Require the body's id to equal the id in the URL."""
    body_id = resource.get("id") if isinstance(resource, dict) else None
    if body_id is None:
        raise InvalidRequestError(
            f"The resource in the body has no id; an update needs id {id_!r} as in the URL",
            expression=("id",),
            message_id="MSG_MISSING_ID",
        )
    if body_id != id_:
        raise InvalidRequestError(
            f"The id {body_id!r} in the body does not match {id_!r} in the URL",
            expression=("id",),
            message_id="MSG_ID_MISMATCH",
        )


def update(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str, body: Any = None
) -> FhirResponse:
    """Store the next version of a resource (or create it with this id)."""
    check_type(type_)
    check_id(id_)
    resource = req.body if body is None else body
    if isinstance(resource, dict) and resource.get("resourceType") == type_:
        check_body_id(resource, id_)
    write = replace(prepare_write(type_, resource), interaction="update")  # the audit names it
    check_visible(repo, ctx, type_, id_, "u")
    check_write(ctx, type_, "u", write.resource)
    if_match = req.header("if-match")
    version = parse_etag(if_match) if if_match else None
    with repo.transaction():
        check_references(repo, ctx, req, type_, write.resource)
        stored, created = repo.update_resource(type_, id_, write, if_match=version)
    return write_response(req, stored, 201 if created else 200)
