"""FHIR history interaction at instance, type and system level.

https://hl7.org/fhir/R4B/http.html#history
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime

from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.fhir.access import OWNED_TYPES
from server.fhir.access import AccessContext
from server.fhir.access import visible_versions
from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import etag
from server.fhir.http import instant
from server.fhir.repository import FhirRepository
from server.fhir.repository import StoredResource
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.search.dates import parse_date_range
from server.fhir.search.paging import is_digits
from server.fhir.search.paging import page_size

_KNOWN = {"_since", "_at", "_count", "_cursor", "_format", "_pretty", "_list", "_sort"}


def _entry(base: str, stored: StoredResource) -> Entry:
    url = f"{stored.type}/{stored.id}"
    if stored.deleted:
        method, status = "DELETE", "204"
    elif stored.version == 1 and stored.method == "POST":
        method, status = "POST", "201"
    else:
        method, status = "PUT", "201" if stored.version == 1 else "200"
    members = {
        "fullUrl": f"{base}/{url}",
        "request": {"method": method, "url": url if method != "POST" else stored.type},
        "response": {
            "status": status,
            "etag": etag(stored.version),
            "lastModified": instant(stored.last_updated),
        },
    }
    return Entry(members, None if stored.deleted else stored.body)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    low, _ = parse_date_range(value)
    return low


def _counts_everything(ctx: AccessContext, type_: str | None) -> bool:
    if ctx.unrestricted:
        return True
    if type_ is not None:
        return not ctx.confined(type_, "r")
    if any(ctx.confined(owned, "r") for owned in OWNED_TYPES):  # another client's Subscriptions
        return False
    return all(r.context != "patient" and not r.params and r.type == "*" for r in ctx.rules) and bool(
        ctx.rules
    )


def history(
    repo: FhirRepository,
    ctx: AccessContext,
    req: FhirRequest,
    type_: str | None = None,
    id_: str | None = None,
) -> FhirResponse:
    """Return a history Bundle, newest first, keyset-paged with _cursor."""
    if type_ is not None:
        check_type(type_)
    if id_ is not None:
        check_id(id_)
        ctx.require(type_ or "", "r")
    elif type_ is not None:
        ctx.require(type_, "s")
    count = page_size(req.param("_count"), default=req.default_count, maximum=req.max_count)
    cursor_text = req.param("_cursor")
    if cursor_text is not None and not is_digits(cursor_text):
        raise InvalidRequestError(f"Invalid _cursor {cursor_text!r}")
    at_text = req.param("_at")
    page = repo.read_history(
        type_,
        id_,
        since=_since(req.param("_since")),
        at=parse_date_range(at_text) if at_text else None,
        count=count,
        cursor=int(cursor_text) if cursor_text else None,
    )
    path = "/".join(p for p in (type_, id_) if p)
    here = f"{req.base_url}/{path}/_history" if path else f"{req.base_url}/_history"
    kept = [(k, v) for k, v in req.params if k in _KNOWN and k not in ("_cursor", "_count")]
    links = [
        (
            "self",
            here
            + "?"
            + urllib.parse.urlencode(
                [*kept, ("_count", str(count))] + ([("_cursor", cursor_text)] if cursor_text else [])
            ),
        )
    ]
    if page.next_cursor is not None:
        query = urllib.parse.urlencode([*kept, ("_count", str(count)), ("_cursor", str(page.next_cursor))])
        links.append(("next", f"{here}?{query}"))
    # Every version is judged on its own (a deletion on the version before it).
    shown = visible_versions(repo, ctx, page.entries)
    if id_ is not None and not shown and not ctx.unrestricted and ctx.confined(type_ or "", "r"):
        if page.entries or repo.read_resource(type_ or "", id_) is not None:
            raise NotFoundError(f"{type_}/{id_} is not known", message_id="MSG_NO_EXIST")
    text = bundle_text(
        "history",
        (_entry(req.base_url, s) for s in shown),
        total=page.total if _counts_everything(ctx, type_) else None,  # no count of hidden versions
        links=links,
    )
    return FhirResponse(200, text)
