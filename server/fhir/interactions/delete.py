"""FHIR delete interaction (a tombstone version; reads then answer 410).

https://hl7.org/fhir/R4B/http.html#delete
"""

from __future__ import annotations

from server.errors import NotFoundError
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import etag
from server.fhir.http import parse_etag
from server.fhir.integrity import check_referrers
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_id
from server.fhir.resources import check_type


def delete(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str) -> FhirResponse:
    """Delete a resource; deleting an already deleted one is a no-op (204)."""
    check_type(type_)
    check_id(id_)
    check_visible(repo, ctx, type_, id_, "d")
    if_match = req.header("if-match")
    with repo.transaction():
        check_referrers(repo, ctx, req, type_, id_)
        stored = repo.delete_resource(type_, id_, if_match=parse_etag(if_match) if if_match else None)
    if stored is None:
        raise NotFoundError(f"{type_}/{id_} is not known", message_id="MSG_NO_EXIST")
    return FhirResponse(204, None, {"ETag": etag(stored.version)})
