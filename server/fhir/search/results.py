"""Build the searchset Bundle: match / include / outcome entries, total, paging links.

https://hl7.org/fhir/R4B/bundle.html#searchset

Entries embed the stored resource text verbatim; only _summary and _elements parse it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson

from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.search.params import encode_cursor
from server.fhir.search.query import Cursor
from server.fhir.search.query import Match
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SearchResult

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_keys(type_: str) -> frozenset[str]:
    """JSON keys of the elements marked isSummary (plus their _primitive extensions)."""
    from fhir.resources.R4B import get_fhir_model_class

    keys = set(_ALWAYS)
    for field in get_fhir_model_class(type_).model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("summary_element_property") and field.alias:
            keys.update((field.alias, "_" + field.alias))
    return frozenset(keys)


@cache
def _mandatory_keys(type_: str) -> frozenset[str]:
    from fhir.resources.R4B import get_fhir_model_class

    keys = set(_ALWAYS)
    for field in get_fhir_model_class(type_).model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if (extra.get("element_required") or field.is_required()) and field.alias:
            keys.add(field.alias)
    return frozenset(keys)


def _subset(resource: dict[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    wanted = set(keep)
    out = {k: v for k, v in resource.items() if k in wanted or (k.startswith("_") and k[1:] in wanted)}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", ()), SUBSETTED]
    out["meta"] = meta
    return out


def shape(body: str, type_: str, summary: str | None, elements: tuple[str, ...]) -> str:
    """Apply _summary / _elements to a stored body (returned unchanged if neither applies)."""
    if summary in (None, "false", "count") and not elements:
        return body
    resource = orjson.loads(body)
    if summary == "true":
        resource = _subset(resource, _summary_keys(type_))
    elif summary == "text":
        resource = _subset(resource, {*_mandatory_keys(type_), "text"})
    elif summary == "data":
        resource = _subset(resource, [k for k in resource if k != "text"])
    elif elements:
        names = {e.split(".", 1)[1] if e.startswith(type_ + ".") else e for e in elements}
        resource = _subset(resource, {*_ALWAYS, *_mandatory_keys(type_), *names})
    return orjson.dumps(resource).decode()


def _entry(base_url: str, match: Match, mode: str, query: SearchQuery) -> Entry:
    members = {"fullUrl": f"{base_url}/{match.type}/{match.id}", "search": {"mode": mode}}
    return Entry(members, shape(match.body, match.type, query.summary, query.elements))


def _outcome(messages: list[str], code: str) -> Entry:
    issues = [{"severity": "warning", "code": code, "diagnostics": m} for m in messages]
    resource = {"resourceType": "OperationOutcome", "issue": issues}
    return Entry({"search": {"mode": "outcome"}}, orjson.dumps(resource).decode())


def _url(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base_url}/{path}" if path else f"{base_url}/"
    return f"{url}?{urlencode(params)}" if params else url


def links(base_url: str, path: str, query: SearchQuery, result: SearchResult) -> list[tuple[str, str]]:
    """Self, next and previous links, all under the base URL."""
    applied = list(query.applied)
    if query.keyset:
        here = [("_cursor", encode_cursor(query.cursor))] if query.cursor is not None else []
    else:
        here = [("_offset", str(query.offset))] if query.offset else []
    out = [("self", _url(base_url, path, applied + here))]
    if not result.matches:
        return out
    if query.keyset:
        first, last = result.matches[0], result.matches[-1]
        after = Cursor(last.sort_values, last.pk)
        before = Cursor(first.sort_values, first.pk, before=True)
        if result.has_next:
            out.append(("next", _url(base_url, path, applied + [("_cursor", encode_cursor(after))])))
        if result.has_previous:
            out.append(("previous", _url(base_url, path, applied + [("_cursor", encode_cursor(before))])))
        return out
    if result.has_next:
        out.append(("next", _url(base_url, path, applied + [("_offset", str(query.offset + query.count))])))
    if result.has_previous:
        back = max(0, query.offset - query.count)
        out.append(("previous", _url(base_url, path, applied + ([("_offset", str(back))] if back else []))))
    return out


def searchset(base_url: str, path: str, query: SearchQuery, result: SearchResult) -> str:
    """Serialise a search result as a searchset Bundle (JSON text)."""
    entries = [_entry(base_url, m, "match", query) for m in result.matches]
    entries += [_entry(base_url, m, "include", query) for m in result.included]
    if result.truncated_includes:
        entries.append(_outcome(result.truncated_includes, "too-costly"))
    if query.ignored:
        names = ", ".join(sorted(set(query.ignored)))
        entries.append(_outcome([f"Unknown search parameters ignored: {names}"], "not-supported"))
    return bundle_text("searchset", entries, total=result.total, links=links(base_url, path, query, result))
