"""FHIR patch interaction with JSON Patch (RFC 6902).

https://hl7.org/fhir/R4B/http.html#patch
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import jsonpatch
import orjson

from server.errors import InvalidRequestError
from server.errors import PreconditionFailedError
from server.errors import UnprocessableError
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.fhir.access import check_write
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import parse_etag
from server.fhir.integrity import check_references
from server.fhir.interactions.read import current
from server.fhir.repository import FhirRepository
from server.fhir.writes import prepare_write
from server.fhir.writes import write_response


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply JSON Patch operations to a copy of the resource."""
    if not isinstance(operations, list):
        raise InvalidRequestError("A JSON Patch body must be an array of operations")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(resource))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise UnprocessableError(f"JSON Patch could not be applied: {exc}") from None
    if not isinstance(patched, dict):
        raise UnprocessableError("JSON Patch did not produce a resource")
    return patched


def patch(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str, body: Any = None
) -> FhirResponse:
    """Apply a JSON Patch to the current version under the row lock and store the result."""
    operations = req.body if body is None else body
    if_match = req.header("if-match")
    check_visible(repo, ctx, type_, id_, "u")
    with repo.transaction():
        repo.lock(type_, id_)
        stored = current(repo, type_, id_)
        if if_match and parse_etag(if_match) != stored.version:
            raise PreconditionFailedError(
                f"If-Match {if_match} does not match the current version {stored.version}"
            )
        patched = apply_patch(orjson.loads(stored.body or "{}"), operations)
        if patched.get("id") != id_ or patched.get("resourceType") != type_:
            raise UnprocessableError("JSON Patch must not change resourceType or id")
        write = replace(prepare_write(type_, patched), interaction="patch")  # the audit names it
        check_write(ctx, type_, "u", write.resource)
        check_references(repo, ctx, req, type_, write.resource)
        new, _ = repo.update_resource(type_, id_, write, if_match=stored.version)
    return write_response(req, new, 200)
