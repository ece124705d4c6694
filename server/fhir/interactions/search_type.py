"""FHIR search interaction on one resource type (GET /Type?..., POST /Type/_search).

https://hl7.org/fhir/R4B/http.html#search
"""

from __future__ import annotations

from typing import Any

from server.errors import ForbiddenError
from server.fhir.access import AccessContext
from server.fhir.access import restrict_query
from server.fhir.access import visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_type
from server.fhir.search.definitions import params_for
from server.fhir.search.params import parse_search
from server.fhir.search.query import SearchQuery
from server.fhir.search.results import searchset

_SEARCH_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special")
_RESULT_PARAMS = (
    ("_sort", "string", "Sort keys, comma-separated; -name sorts descending"),
    ("_count", "number", "Page size (default and maximum set by the server)"),
    ("_include", "special", "Type:param[:Target], :iterate, *"),
    ("_revinclude", "special", "Type:param[:Target], :iterate, *"),
    ("_summary", "token", "true | text | data | count | false"),
    ("_elements", "string", "Top-level elements to return"),
    ("_total", "token", "none | estimate | accurate"),
    ("_has", "special", "Reverse chaining: _has:Type:reference:param=value"),
)


def check_search_access(ctx: AccessContext, types: tuple[str, ...]) -> None:
    """Refuse with 403 if the caller may not search one of the types."""
    for type_ in types:
        if not ctx.can(type_, "s"):
            raise ForbiddenError(
                f"Searching {type_} is not allowed for this client", message_id="MSG_FORBIDDEN"
            )


def run_search(
    repo: FhirRepository, req: FhirRequest, query: SearchQuery, path: str, ctx: AccessContext | None = None
) -> FhirResponse:
    """Run a parsed search (confined to what `ctx` may see) and answer with its searchset Bundle."""
    if ctx is not None:
        query = restrict_query(ctx, query)
    result = repo.search(query)
    if ctx is not None:
        # SQL narrowed the search; each version that leaves is still asked of the policy, and
        # _include / _revinclude may reach other patients' data or types outside the scopes.
        kept = visible(ctx, result.matches, "s")
        if len(kept) != len(result.matches):
            result.matches, result.total = kept, None  # no count of what the caller may not see
        result.included = visible(ctx, result.included, "r")
    headers = {"Content-Type": "application/fhir+json"}
    return FhirResponse(200, searchset(req.base_url.rstrip("/"), path, query, result), headers)


def search_type(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str) -> FhirResponse:
    """Answer a type-level search with a searchset Bundle."""
    check_type(type_)
    check_search_access(ctx, (type_,))
    return run_search(repo, req, parse_search(req, (type_,)), type_, ctx)


def _search_params(type_: str) -> list[dict[str, Any]]:
    out = [
        {"name": sp.name, "definition": sp.url, "type": sp.type}
        for sp in params_for(type_).values()
        if sp.type in _SEARCH_TYPES and sp.type != "special"
    ]
    out += [{"name": n, "type": t, "documentation": d} for n, t, d in _RESULT_PARAMS]
    return out


def _reference_params(type_: str) -> list[str]:
    return sorted(sp.name for sp in params_for(type_).values() if sp.type == "reference")


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """List each type's search parameters, _include and _revinclude values."""
    rest = statement["rest"][0]
    referencing: dict[str, list[str]] = {}
    for entry in rest["resource"]:
        for name in _reference_params(entry["type"]):
            for target in params_for(entry["type"])[name].targets:
                referencing.setdefault(target, []).append(f"{entry['type']}:{name}")
    for entry in rest["resource"]:
        type_ = entry["type"]
        entry["searchParam"] = _search_params(type_)
        entry["searchInclude"] = ["*", *(f"{type_}:{n}" for n in _reference_params(type_))]
        entry["searchRevInclude"] = sorted(referencing.get(type_, ()))
