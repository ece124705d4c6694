"""FHIR read interaction.

https://hl7.org/fhir/R4B/http.html#read
"""

from __future__ import annotations

import email.utils

from server.errors import GoneError
from server.errors import NotFoundError
from server.fhir.access import AccessContext
from server.fhir.access import require_visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import etag
from server.fhir.http import http_date
from server.fhir.repository import FhirRepository
from server.fhir.repository import StoredResource
from server.fhir.resources import check_id
from server.fhir.resources import check_type


def current(
    repo: FhirRepository, type_: str, id_: str, ctx: AccessContext | None = None, interaction: str = "r"
) -> StoredResource:
    """Return the live current version, raising 404 (unknown or not visible to `ctx`) or 410 (deleted)."""
    check_type(type_)
    check_id(id_)
    stored = repo.read_resource(type_, id_)
    if ctx is not None:
        ctx.require(type_, interaction)
        require_visible(repo, ctx, stored, interaction)
    if stored is None:
        raise NotFoundError(f"{type_}/{id_} is not known", message_id="MSG_NO_EXIST")
    if stored.deleted:
        raise GoneError(
            f"{type_}/{id_} was deleted (version {stored.version})",
            message_id="MSG_DELETED",
            headers={"ETag": etag(stored.version)},
        )
    return stored


def not_modified(req: FhirRequest, stored: StoredResource) -> bool:
    """Return whether If-None-Match / If-Modified-Since say the client's copy is current."""
    inm = req.header("if-none-match")
    if inm is not None:
        tags = {t.strip() for t in inm.split(",")}
        return "*" in tags or etag(stored.version) in tags or f'"{stored.version}"' in tags
    ims = req.header("if-modified-since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        return stored.last_updated.replace(microsecond=0) <= since.replace(tzinfo=None)
    return False


def read(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str) -> FhirResponse:
    """Return the current version of a resource (304 if the client's copy is current)."""
    stored = current(repo, type_, id_, ctx)
    headers = {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}
    if not_modified(req, stored):
        return FhirResponse(304, None, headers)
    return FhirResponse(200, stored.body, headers)
