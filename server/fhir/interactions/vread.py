"""FHIR vread interaction.

https://hl7.org/fhir/R4B/http.html#vread
"""

from __future__ import annotations

from server.errors import GoneError
from server.errors import NotFoundError
from server.fhir.access import AccessContext
from server.fhir.access import require_visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import etag
from server.fhir.http import http_date
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.search.paging import is_digits


def vread(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str, vid: str
) -> FhirResponse:
    """Return one version of a resource; a deleted version answers 410."""
    check_type(type_)
    check_id(id_)
    ctx.require(type_, "r")
    if not is_digits(vid):
        raise NotFoundError(f"{type_}/{id_} has no version {vid!r}", message_id="MSG_NO_VERSION")
    stored = repo.read_version(type_, id_, int(vid))
    if stored is None:
        raise NotFoundError(f"{type_}/{id_} has no version {vid}", message_id="MSG_NO_VERSION")
    require_visible(repo, ctx, stored)  # judged on this version (a deletion: the one before it)
    headers = {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}
    if stored.deleted:
        raise GoneError(f"{type_}/{id_} version {vid} is a deletion", headers=headers)
    return FhirResponse(200, stored.body, headers)
