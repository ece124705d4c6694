"""Bulk Data $export kick-off at system, Patient and Group level (FHIR Bulk Data Access 2.0).

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

This module checks the request and queues a job through the repository; the job runs in
server.bulk.worker and its status and files are served by server.api.bulk_routes. The job
records the kick-off token's scopes: the worker exports only what `permits` grants under them.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.fhir.access import AccessContext
from server.fhir.access import version_visible
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
from server.fhir.resources import ID_RE
from server.fhir.resources import check_type
from server.fhir.resources import resource_types
from server.fhir.search.params import parse_criteria

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
STATUS_PATH = "/bulk/status/"
FILES_PATH = "/bulk/files/"
_UNSUPPORTED = {
    "_elements",
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
    scopes: str  # the kick-off token's scopes, from which the worker rebuilds its access
    group_id: str | None = None
    patients: tuple[str, ...] | None = None  # the `patient` parameter's ids; None: every patient


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


def group_members(group: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Return the ids of a Group's active Patient members and the member references that are not Patients."""
    patients: list[str] = []
    others: list[str] = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive"):
            continue
        reference = str((member.get("entity") or {}).get("reference") or "")
        type_, _, id_ = reference.rstrip("/").rpartition("/")
        if type_.rpartition("/")[2] != "Patient" or not id_:
            others.append(reference)
        elif id_ not in patients:
            patients.append(id_)
    return patients, others


def _bad_patient(diagnostics: str) -> InvalidRequestError:
    return InvalidRequestError(diagnostics, expression=("patient",), message_id="MSG_PARAM_INVALID")


def _reference_id(req: FhirRequest, param: dict[str, Any]) -> str:
    value = param.get("valueReference")
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str):
        raise _bad_patient("patient: each value must be a valueReference to a Patient")
    type_, _, id_ = reference.removeprefix(req.base_url.rstrip("/") + "/").partition("/")
    if type_ != "Patient" or not ID_RE.match(id_):
        raise _bad_patient(f"patient {reference!r}: expected a reference Patient/[id]")
    return id_


def _patients(
    repo: FhirRepository,
    ctx: AccessContext,
    req: FhirRequest,
    pairs: list[tuple[str, str]],
    level: str,
    group: dict[str, Any] | None,
) -> tuple[str, ...] | None:
    """Check the `patient` parameter (POSTed valueReferences); return its ids, or None when absent.

    Bulk Data 2.0: not applicable to system level; a patient not on the server (or not in the
    group) is an error response to the kick-off. A Patient the caller may not see is not known.
    """
    if any(key == "patient" for key, _ in pairs):  # a query parameter, or a primitive value
        raise _bad_patient(
            "patient: send Patient references as valueReference in a POSTed Parameters resource"
        )
    body = req.body if isinstance(req.body, dict) else {}
    params = [p for p in body.get("parameter") or [] if p.get("name") == "patient"]
    if not params:
        return None
    if level == "system":
        raise _bad_patient("patient is not applicable to a system-level export: use Patient/$export")
    ids = tuple(dict.fromkeys(_reference_id(req, p) for p in params))
    for id_ in ids:
        if group is not None and id_ not in group_members(group)[0]:
            raise _bad_patient(f"patient: Patient/{id_} is not a member of Group/{group.get('id')}")
        stored = repo.read_resource("Patient", id_)
        if (
            stored is None
            or stored.deleted
            or (ctx.can("Patient", "r") and not version_visible(repo, ctx, stored, "r"))
        ):
            raise _bad_patient(f"patient: Patient/{id_} is not known")
    return ids


def _grant(ctx: AccessContext) -> str:
    """The scopes the job runs under: the token's (an in-process caller may read everything)."""
    return "system/*.rs" if ctx.unrestricted else " ".join(sorted(ctx.scopes))


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
    group = None
    if group_id is not None:
        group = orjson.loads(current(repo, "Group", group_id, ctx).body or "{}")
    patients = _patients(repo, ctx, req, pairs, level, group)
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
        scopes=_grant(ctx),
        group_id=group_id,
        patients=patients,
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
