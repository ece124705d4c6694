"""Conditional create (If-None-Exist), conditional update and conditional delete.

https://hl7.org/fhir/R4B/http.html#cond-update

Criteria are parsed strictly (an unknown parameter would match everything). A conditional
create claims a guard row keyed by the type and the normalised criteria in the same
transaction as the resource, so two concurrent identical creates cannot both create.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from server.errors import InvalidRequestError
from server.errors import MultipleMatchesError
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.fhir.access import check_write
from server.fhir.access import restrict_query
from server.fhir.access import visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import etag
from server.fhir.http import parse_etag
from server.fhir.integrity import check_references
from server.fhir.integrity import check_referrers
from server.fhir.repository import ConditionalCreate
from server.fhir.repository import FhirRepository
from server.fhir.repository import StoredResource
from server.fhir.repository import WriteRequest
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.search.indexer import compartments_of
from server.fhir.search.params import RESULT_PARAMS
from server.fhir.search.params import parse_criteria
from server.fhir.search.query import Match
from server.fhir.search.query import SearchQuery
from server.fhir.writes import new_id
from server.fhir.writes import prepare_write
from server.fhir.writes import write_response


def _pairs(criteria: str | tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    if isinstance(criteria, str):
        pairs = parse_qsl(criteria.strip().lstrip("?"), keep_blank_values=True)
    else:
        pairs = list(criteria)
    return [(k, v) for k, v in pairs if k.partition(":")[0] not in RESULT_PARAMS]


def guard_key(type_: str, criteria: str | tuple[tuple[str, str], ...], scope: str | None = None) -> str:
    """Return the hash of the type, the sorted criteria and the caller's confinement.

    Equal for reordered parameters. `scope` (the patient a confined caller is bound to) keeps
    one patient's conditional creates from contending with matches it may not see.
    """
    normal = urlencode(sorted(_pairs(criteria)))
    prefix = f"{scope}@" if scope else ""
    return hashlib.sha256(f"{prefix}{type_}?{normal}".encode()).hexdigest()


def _scope(ctx: AccessContext, type_: str, interaction: str) -> str | None:
    return (ctx.patient or "restricted") if ctx.confined(type_, interaction) else None


def _matches(repo: FhirRepository, ctx: AccessContext, query: SearchQuery, interaction: str) -> list[Match]:
    """The first two matches the caller may see and act on (nothing else may show in the answer)."""
    result = repo.search(replace(query, count=2, total="none", includes=(), sort=()))
    return visible(ctx, list(result.matches), interaction)


def find_matches(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, criteria: str
) -> list[Match]:
    """The first two resources matching If-None-Exist criteria that the caller may see."""
    ctx.require(type_, "s")
    query = restrict_query(ctx, parse_criteria(req, type_, _pairs(criteria)), "s")
    return _matches(repo, ctx, query, "s")


def create_lock(repo: FhirRepository, ctx: AccessContext, type_: str, criteria: str) -> None:
    """Make concurrent identical conditional creates (of one caller's view) wait for each other."""
    repo.lock_key(guard_key(type_, criteria, _scope(ctx, type_, "s")))


def create_guarded(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, write: WriteRequest, criteria: str
) -> tuple[StoredResource | None, StoredResource | None]:
    """Return (the existing match, None) or (None, the resource created under the guard)."""
    ctx.require(type_, "s")  # matching is a search: a client that cannot search cannot match
    query = restrict_query(ctx, parse_criteria(req, type_, _pairs(criteria)), "s")
    id_ = new_id()
    write.resource["id"] = id_  # so the resource's own compartment gets the new id
    write = replace(write, compartments=tuple(compartments_of(write.resource)))
    op = ConditionalCreate(
        query=query,
        key=guard_key(type_, criteria, _scope(ctx, type_, "s")),
        type=type_,
        id=id_,
        write=write,
        visible=lambda found: visible(ctx, found, "s"),
    )
    return repo.conditional_create(op)


def _serialise(repo: FhirRepository, ctx: AccessContext, type_: str, req: FhirRequest, action: str) -> None:
    """Make identical conditional writes wait for each other (so both cannot create)."""
    lock_key = getattr(repo, "lock_key", None)  # optional part of the repository
    if lock_key is not None:
        lock_key(guard_key(type_, req.params, _scope(ctx, type_, action)))


def _criteria(req: FhirRequest, type_: str) -> SearchQuery:
    pairs = [(k, v) for k, v in req.params if k.partition(":")[0] not in ("_format", "_pretty")]
    return parse_criteria(req, type_, pairs)


def conditional_update(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str
) -> FhirResponse:
    """PUT /Type?criteria: create if nothing matches, update the one match, 412 if several."""
    check_type(type_)
    query = restrict_query(ctx, _criteria(req, type_), "u")
    resource = req.body
    body_id = resource.get("id") if isinstance(resource, dict) else None
    if body_id is not None:
        check_id(str(body_id))
    write = prepare_write(type_, resource)
    check_write(ctx, type_, "u", write.resource)
    if_match = req.header("if-match")
    version = parse_etag(if_match) if if_match else None
    with repo.transaction():
        _serialise(repo, ctx, type_, req, "u")
        found = _matches(repo, ctx, query, "u")
        if len(found) > 1:
            raise MultipleMatchesError(
                f"The criteria match more than one {type_}; be more specific",
                message_id="MSG_MULTIPLE_MATCHES",
            )
        if found:
            target = found[0].id
            if body_id is not None and body_id != target:
                raise InvalidRequestError(
                    f"The id {body_id!r} in the body does not match {type_}/{target} found by the criteria",
                    expression=("id",),
                    message_id="MSG_ID_MISMATCH",
                )
            write.resource["id"] = target
            check_references(repo, ctx, req, type_, write.resource)
            stored, created = repo.update_resource(type_, target, write, if_match=version)
        elif body_id is not None:
            check_visible(repo, ctx, type_, str(body_id), "u")  # an id the caller may not see is refused
            check_references(repo, ctx, req, type_, write.resource)
            stored, created = repo.update_resource(type_, str(body_id), write, if_match=version)
        else:
            ctx.require(type_, "c")
            write.resource["id"] = new_id()
            check_references(repo, ctx, req, type_, write.resource)
            stored, created = repo.create_resource(type_, write, write.resource["id"]), True
    return write_response(req, stored, 201 if created else 200)


def conditional_delete(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str
) -> FhirResponse:
    """DELETE /Type?criteria: delete the one match (204 if none), 412 if several."""
    check_type(type_)
    query = restrict_query(ctx, _criteria(req, type_), "d")
    with repo.transaction():
        _serialise(repo, ctx, type_, req, "d")
        found = _matches(repo, ctx, query, "d")
        if len(found) > 1:
            raise MultipleMatchesError(
                f"The criteria match more than one {type_}; conditional delete deletes one",
                message_id="MSG_MULTIPLE_MATCHES",
            )
        if not found:
            return FhirResponse(204, None, {})
        check_referrers(repo, ctx, req, type_, found[0].id)
        stored = repo.delete_resource(type_, found[0].id)
    headers = {"ETag": etag(stored.version)} if stored is not None else {}
    from server.fhir.routing import Interaction  # the route table imports this module

    return FhirResponse(204, None, headers, Interaction("delete", type_, found[0].id))  # what it deleted
