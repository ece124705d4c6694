"""Bulk Data $export kick-off at system, Patient and Group level (FHIR Bulk Data Access 2.0).

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

This module checks the request and queues a job through the repository; the job runs in
server.bulk.worker and its status and files are served by server.api.bulk_routes.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.read import current
from server.fhir.operations.everything import operation_params
from server.fhir.operations.everything import parse_since
from server.fhir.operations.everything import parse_types
from server.fhir.operations.registry import register
from server.fhir.outcomes import information
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_type
from server.fhir.resources import resource_types
from server.fhir.search.params import parse_criteria

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
STATUS_PATH = "/bulk/status/"
FILES_PATH = "/bulk/files/"
_UNSUPPORTED = {
    "_elements",
    "patient",
    "includeAssociatedData",
    "_until",
    "organizeOutputBy",
    "allowPartialManifests",
}


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """A checked kick-off request, as the job store keeps it."""

    level: str  # system | patient | group
    types: tuple[str, ...]
    type_filters: tuple[str, ...]
    since: datetime | None
    output_format: str
    request_url: str
    base_url: str
    client_id: str | None
    group_id: str | None = None


def filter_query(req: FhirRequest, value: str) -> tuple[str, str]:
    """Split and check one _typeFilter value ("Type?search"); return (type, query string)."""
    type_, sep, query = value.partition("?")
    if not sep or not query:
        raise InvalidRequestError(
            f"_typeFilter {value!r}: expected Type?search-parameters",
            expression=("_typeFilter",),
            message_id="MSG_PARAM_INVALID",
        )
    check_type(type_)
    parse_criteria(req, type_, query)  # unknown or malformed parameters are a 400 now, not in the job
    return type_, query


def _filters(req: FhirRequest, values: list[str], types: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        type_, query = filter_query(req, value)
        if types and type_ not in types:
            raise InvalidRequestError(
                f"_typeFilter names {type_}, which is not in _type", expression=("_typeFilter",)
            )
        out.append(f"{type_}?{query}")
    return tuple(out)


def _check_params(req: FhirRequest, pairs: list[tuple[str, str]]) -> None:
    lenient = req.prefer.get("handling") == "lenient"
    for key, _ in pairs:
        if key in _UNSUPPORTED and not lenient:
            raise InvalidRequestError(
                f"$export parameter {key} is not supported (send Prefer: handling=lenient"
                " to have it ignored)",
                expression=(key,),
                message_id="MSG_PARAM_UNKNOWN",
            )


def _allowed_types(ctx: AccessContext, types: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse types the client may not read; without _type, narrow "everything" to what it may read."""
    if ctx.patient is not None:
        raise ForbiddenError(
            "Bulk export needs a system-level token, not one bound to a patient", message_id="MSG_FORBIDDEN"
        )
    for type_ in types:
        if not ctx.can(type_, "r"):
            raise ForbiddenError(
                f"Exporting {type_} is not allowed for this client", message_id="MSG_FORBIDDEN"
            )
    if types:
        return types
    every = resource_types()
    allowed = tuple(t for t in every if ctx.can(t, "r"))
    if not allowed:
        raise ForbiddenError("This client may not read any resource type", message_id="MSG_FORBIDDEN")
    return () if len(allowed) == len(every) else allowed


def kick_off(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, level: str, group_id: str | None = None
) -> FhirResponse:
    """Check the request, queue the job and answer 202 with the status URL in Content-Location."""
    if "respond-async" not in req.prefer:
        raise InvalidRequestError(
            "$export is asynchronous: send Prefer: respond-async", message_id="MSG_PREFER_ASYNC"
        )
    pairs = operation_params(req)
    _check_params(req, pairs)
    output_format = next((v for k, v in reversed(pairs) if k == "_outputFormat"), "application/fhir+ndjson")
    if output_format not in OUTPUT_FORMATS:
        raise InvalidRequestError(
            f"_outputFormat {output_format!r}: only application/fhir+ndjson is produced",
            expression=("_outputFormat",),
        )
    types = _allowed_types(ctx, parse_types([v for k, v in pairs if k == "_type"]))
    filters = _filters(req, [v for k, v in pairs if k == "_typeFilter"], types)
    since = parse_since(next((v for k, v in reversed(pairs) if k == "_since"), None))
    if group_id is not None:
        current(repo, "Group", group_id)
    base = req.base_url.rstrip("/")
    query = urllib.parse.urlencode(req.params)
    request = ExportRequest(
        level=level,
        types=types,
        type_filters=filters,
        since=since,
        output_format="application/fhir+ndjson",
        request_url=f"{base}{req.path}" + (f"?{query}" if query else ""),
        base_url=base,
        client_id=ctx.client_id,
        group_id=group_id,
    )
    job_id = repo.submit_export(request)
    headers = {"Content-Location": f"{base}{STATUS_PATH}{job_id}"}
    return FhirResponse(202, information(f"Export job {job_id} queued"), headers)


@register("", "export", instance=False)
def export_system(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: None
) -> FhirResponse:
    """GET [base]/$export: every resource on the server."""
    return kick_off(repo, ctx, req, "system")


@register("Patient", "export", instance=False)
def export_patients(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: None
) -> FhirResponse:
    """GET [base]/Patient/$export: the Patient compartments of all patients."""
    return kick_off(repo, ctx, req, "patient")


@register("Group", "export", instance=True)
def export_group(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str
) -> FhirResponse:
    """GET [base]/Group/{id}/$export: the Patient compartments of the group's members."""
    return kick_off(repo, ctx, req, "group", id_)


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare Bulk Data export at system, Patient and Group level."""
    statement.setdefault("instantiates", []).append(
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    )
    definition = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    rest = statement["rest"][0]
    rest.setdefault("operation", []).append({"name": "export", "definition": definition + "export"})
    for entry in rest["resource"]:
        if entry["type"] in ("Patient", "Group"):
            name = entry["type"].lower()
            entry.setdefault("operation", []).append(
                {"name": "export", "definition": f"{definition}{name}-export"}
            )
