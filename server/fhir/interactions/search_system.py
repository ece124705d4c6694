"""FHIR search interaction across all types (GET /?_type=A,B&...).

https://hl7.org/fhir/R4B/http.html#search
"""

from __future__ import annotations

import dataclasses

from server.errors import InvalidRequestError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.search_type import check_search_access
from server.fhir.interactions.search_type import run_search
from server.fhir.repository import FhirRepository
from server.fhir.search.definitions import is_resource_type
from server.fhir.search.params import parse_search


def _types(req: FhirRequest) -> tuple[str, ...]:
    names: list[str] = []
    for key, value in req.params:
        if key == "_type":
            names += [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if not is_resource_type(name):
            raise InvalidRequestError(
                f"Unknown resource type {name!r} in _type",
                expression=("_type",),
                message_id="MSG_PARAM_INVALID",
            )
    return tuple(dict.fromkeys(names))


def search_system(repo: FhirRepository, ctx: AccessContext, req: FhirRequest) -> FhirResponse:
    """Answer a system-level search over _type (or every type) with a searchset Bundle."""
    types = _types(req)
    check_search_access(ctx, types)
    query = parse_search(req, types, skip=("_type",))
    if types:
        query = dataclasses.replace(query, applied=(("_type", ",".join(types)), *query.applied))
    return run_search(repo, req, query, "", ctx)
