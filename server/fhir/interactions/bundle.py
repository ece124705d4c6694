"""FHIR batch and transaction interactions (POST of a Bundle to the base).

A transaction is atomic: every entry runs in one database transaction, in the order the
spec gives (DELETE, POST, PUT/PATCH, GET), with urn:uuid fullUrls and conditional
references resolved first; any failure rolls back everything and names the entry.
A batch runs each entry on its own. https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

import base64
import email.utils
import re
import urllib.parse
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from http import HTTPStatus
from typing import Any

import orjson

from server.errors import FhirError
from server.errors import InvalidRequestError
from server.errors import MultipleMatchesError
from server.errors import PayloadTooLargeError
from server.errors import PreconditionFailedError
from server.fhir import conditional
from server.fhir.access import AccessContext
from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import instant
from server.fhir.http import version_headers
from server.fhir.outcomes import to_operation_outcome
from server.fhir.repository import FhirRepository
from server.fhir.routing import Interaction
from server.fhir.routing import dispatch
from server.fhir.routing import interaction_of
from server.fhir.writes import new_id

_LAST_UPDATED = re.compile(r'"meta":\{[^}]*"lastUpdated":"([^"]+)"')
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_HEADERS = {
    "ifMatch": "if-match",
    "ifNoneMatch": "if-none-match",
    "ifModifiedSince": "if-modified-since",
    "ifNoneExist": "if-none-exist",
}


@dataclass(slots=True)
class _Item:
    """One entry as parsed: where it sits, what it asks, and what it answered."""

    index: int
    method: str
    path: list[str]
    query: str
    headers: dict[str, str]
    resource: Any
    full_url: str | None
    assigned_id: str | None = None
    existing: FhirResponse | None = None
    response: dict[str, Any] = field(default_factory=dict)
    resource_text: str | None = None
    interaction: Interaction | None = None  # what the entry ran (named before it runs)


def _parse_entry(index: int, entry: Any, base_url: str) -> _Item:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise InvalidRequestError(
            f"Bundle.entry[{index}] has no request", expression=(f"Bundle.entry[{index}]",)
        )
    request = entry["request"]
    method = str(request.get("method", "")).upper()
    url = request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise InvalidRequestError(
            f"Bundle.entry[{index}].request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
            expression=(f"Bundle.entry[{index}].request",),
        )
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    path, _, query = url.lstrip("/").partition("?")
    headers = {h: str(request[k]) for k, h in _HEADERS.items() if request.get(k)}
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        # a uri: as an object or array it cannot be the key references are resolved by (was a 500)
        raise InvalidRequestError(
            f"Bundle.entry[{index}].fullUrl must be a string (a uri)",
            expression=(f"Bundle.entry[{index}].fullUrl",),
        )
    resource = entry.get("resource")
    if method == "PATCH":
        resource = _patch_body(index, resource)
    return _Item(index, method, [p for p in path.split("/") if p], query, headers, resource, full_url)


def _patch_body(index: int, resource: Any) -> Any:
    """A JSON Patch travels in a transaction as a Binary with base64 data."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        if resource.get("contentType") != "application/json-patch+json":
            raise InvalidRequestError(
                f"Bundle.entry[{index}]: PATCH Binary must be application/json-patch+json"
            )
        try:
            return orjson.loads(base64.b64decode(resource.get("data", "")))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise InvalidRequestError(
                f"Bundle.entry[{index}]: PATCH Binary data is not JSON Patch: {exc}"
            ) from None
    raise InvalidRequestError(f"Bundle.entry[{index}]: PATCH entries carry a Binary JSON Patch")


def _sub_request(req: FhirRequest, item: _Item) -> FhirRequest:
    headers = {"prefer": req.header("prefer") or "", **item.headers}
    return replace(
        req,
        method=item.method if item.method != "HEAD" else "GET",
        params=tuple(urllib.parse.parse_qsl(item.query, keep_blank_values=True)),
        headers=headers,
        body=item.resource,
        path="/" + "/".join(item.path),
    )


def _entry_response(resp: FhirResponse) -> tuple[dict[str, Any], str | None]:
    status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
    out: dict[str, Any] = {"status": status}
    if "Location" in resp.headers:
        out["location"] = resp.headers["Location"]
    if "ETag" in resp.headers:
        out["etag"] = resp.headers["ETag"]
    body = resp.body
    text = orjson.dumps(body).decode() if isinstance(body, dict) else body
    stamp = _LAST_UPDATED.search(text[:300]) if text else None
    if stamp:  # the stored instant, with its milliseconds
        out["lastModified"] = stamp.group(1)
    elif "Last-Modified" in resp.headers:
        modified = email.utils.parsedate_to_datetime(resp.headers["Last-Modified"])
        out["lastModified"] = instant(modified.replace(tzinfo=None))
    if text and resp.status < 300 and '"resourceType":"OperationOutcome"' in text[:40]:
        out["outcome"] = orjson.loads(text)
        text = None
    return out, text


def _resolve_ids(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, items: list[_Item]
) -> dict[str, str]:
    """Decide every entry's target id up front; return fullUrl -> Type/id."""
    mapping: dict[str, str] = {}
    for item in items:
        if not item.path:
            continue
        type_ = item.path[0]
        target = None
        if item.method == "POST" and len(item.path) == 1:
            criteria = item.headers.get("if-none-exist")
            if criteria:
                # Concurrent identical conditional creates wait here for each other, so the
                # later one finds what the earlier one created.
                conditional.create_lock(repo, ctx, type_, criteria)
            found = conditional.find_matches(repo, ctx, req, type_, criteria) if criteria else []
            if len(found) > 1:
                raise MultipleMatchesError(f"Bundle.entry[{item.index}]: ifNoneExist matches several {type_}")
            if found:
                stored = repo.read_resource(type_, found[0].id)
                # The create interaction ran; its condition found the match (nothing is written).
                headers = version_headers(stored, req.base_url) if stored else {}
                item.existing = (
                    FhirResponse(200, stored.body, headers, Interaction("create", type_)) if stored else None
                )
                target = found[0].id
            else:
                item.assigned_id = target = new_id()
                item.headers.pop("if-none-exist", None)
        elif item.method == "PUT" and len(item.path) == 2:
            target = item.path[1]
        elif item.method == "PUT" and len(item.path) == 1 and item.query:
            found = conditional.find_matches(repo, ctx, req, type_, item.query)
            if len(found) == 1:
                target = found[0].id
            elif not found:
                body_id = item.resource.get("id") if isinstance(item.resource, dict) else None
                target = body_id or new_id()
                item.path, item.query = [type_, target], ""
                if isinstance(item.resource, dict):
                    item.resource["id"] = target
        if target and item.full_url:
            mapping[item.full_url] = f"{type_}/{target}"
    return mapping


def _rewrite(node: Any, mapping: dict[str, str], resolve: Any) -> Any:
    """Replace urn:uuid and conditional references anywhere inside a resource."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = mapping.get(value) or resolve(value)
            else:
                out[key] = _rewrite(value, mapping, resolve)
        return out
    if isinstance(node, list):
        return [_rewrite(v, mapping, resolve) for v in node]
    if isinstance(node, str) and node in mapping:
        return mapping[node]  # urn:uuid in a canonical or uri element
    return node


def _outcome_entry(err: FhirError) -> Entry:
    status = f"{err.status} {HTTPStatus(err.status).phrase}"
    return Entry({"response": {"status": status, "outcome": to_operation_outcome(err)}})


def _failed(err: FhirError, item: _Item) -> FhirError:
    where = f"Bundle.entry[{item.index}] ({item.method} {'/'.join(item.path)}{'?' + item.query if item.query else ''})"  # noqa: E501
    clone = type(err)(
        f"{where}: {err.diagnostics}",
        expression=(f"Bundle.entry[{item.index}]", *err.expression),
        message_id=err.message_id,
        issues=err.issues,
    )
    return clone


def _run(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, item: _Item) -> None:
    if item.existing is not None:
        resp = item.existing
    else:
        extra = {"assigned_id": item.assigned_id} if item.assigned_id else {}
        sub = _sub_request(req, item)
        # Named before the handler runs, so a failed entry is audited as it too (as a request is).
        item.interaction = interaction_of(sub.method, item.path)
        resp = dispatch(repo, ctx, sub, item.path, bool(item.query), **extra)
    item.interaction = resp.interaction
    item.response, item.resource_text = _entry_response(resp)


def _bundle_targets(items: list[_Item], mapping: dict[str, str]) -> tuple[frozenset[str], frozenset[str]]:
    """Type/id of every resource the transaction writes, and of those it deletes.

    References to the written ones resolve within the Bundle; referrers among either are
    left to their own entries when a delete checks referential integrity.
    """
    written = set(mapping.values())
    deleted = set()
    for item in items:
        if item.assigned_id and item.path:
            written.add(f"{item.path[0]}/{item.assigned_id}")
        if len(item.path) == 2:
            key = f"{item.path[0]}/{item.path[1]}"
            if item.method in ("PUT", "PATCH"):
                written.add(key)
            elif item.method == "DELETE":
                deleted.add(key)
    return frozenset(written), frozenset(deleted)


def _transaction(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, items: list[_Item]
) -> FhirResponse:
    with repo.transaction():
        mapping = _resolve_ids(repo, ctx, req, items)
        written, deleted = _bundle_targets(items, mapping)
        # One answer per reference target for the whole transaction (entries often name one Patient):
        # what it writes or deletes itself is known from bundle_targets / bundle_deletes.
        req = replace(req, bundle_targets=req.bundle_targets | written, bundle_deletes=deleted, resolved={})

        def resolve(reference: str) -> str:
            if "?" not in reference or reference.startswith(("http:", "https:", "urn:")):
                return reference
            type_, _, criteria = reference.partition("?")
            found = conditional.find_matches(repo, ctx, req, type_, criteria)
            if len(found) != 1:
                raise PreconditionFailedError(
                    f"Conditional reference {reference!r} matches {len(found)} resources (needs exactly one)"
                )
            return f"{type_}/{found[0].id}"

        for item in sorted(items, key=lambda i: _ORDER[i.method]):
            try:
                if item.resource is not None and item.method in ("POST", "PUT"):
                    item.resource = _rewrite(item.resource, mapping, resolve)
                _run(repo, ctx, req, item)
            except FhirError as err:
                raise _failed(err, item) from None
    entries = [
        Entry(
            {"fullUrl": _full_url(req, i), "response": i.response}
            if _full_url(req, i)
            else {"response": i.response},
            i.resource_text,
        )
        for i in items
    ]
    ran = Interaction("transaction", entries=tuple(i.interaction for i in items))
    return FhirResponse(200, bundle_text("transaction-response", entries), interaction=ran)


def _full_url(req: FhirRequest, item: _Item) -> str | None:
    location = item.response.get("location")
    if location and "/_history/" in location:
        return location.split("/_history/")[0]
    return None


def _batch(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, entries: list[Any]) -> FhirResponse:
    out = []
    ran: list[Interaction | None] = []
    for index, raw in enumerate(entries):
        item = None
        try:
            item = _parse_entry(index, raw, req.base_url)
            _run(repo, ctx, req, item)
            out.append(Entry({"response": item.response}, item.resource_text))
        except FhirError as err:
            out.append(_outcome_entry(err))
        ran.append(item.interaction if item else None)
    interaction = Interaction("batch", entries=tuple(ran))
    return FhirResponse(200, bundle_text("batch-response", out), interaction=interaction)


def process_bundle(repo: FhirRepository, ctx: AccessContext, req: FhirRequest) -> FhirResponse:
    """Answer POST / with a batch-response or transaction-response Bundle."""
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequestError("POST to the base takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequestError(
            f"Bundle.type {kind!r}: only batch and transaction are processed here",
            expression=("Bundle.type",),
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidRequestError("Bundle.entry must be an array", expression=("Bundle.entry",))
    if len(entries) > req.max_bundle_entries:
        raise PayloadTooLargeError(
            f"The Bundle has {len(entries)} entries; this server takes at most {req.max_bundle_entries}",
            expression=("Bundle.entry",),
        )
    if kind == "batch":
        return _batch(repo, ctx, req, entries)
    items = [_parse_entry(i, e, req.base_url) for i, e in enumerate(entries)]
    return _transaction(repo, ctx, req, items)
