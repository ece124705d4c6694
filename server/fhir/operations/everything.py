"""Patient/$everything: the patient's record (compartment plus referenced resources) as a searchset.

https://hl7.org/fhir/R4B/patient-operation-everything.html
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any

from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.fhir.access import OWNED_TYPES
from server.fhir.access import AccessContext
from server.fhir.access import visible
from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.read import current
from server.fhir.operations.registry import register
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_type
from server.fhir.resources import resource_types
from server.fhir.search.dates import parse_date_range
from server.fhir.search.paging import is_digits
from server.fhir.search.paging import page_size

_PRIMITIVES = (
    "valueString",
    "valueInstant",
    "valueDateTime",
    "valueDate",
    "valueCode",
    "valueUri",
    "valueInteger",
    "valueUnsignedInt",
    "valuePositiveInt",
    "valueBoolean",
)


def operation_params(req: FhirRequest) -> list[tuple[str, str]]:
    """Return the query parameters plus those of a POSTed Parameters resource."""
    pairs = list(req.params)
    body = req.body
    if body is None:
        return pairs
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequestError("The operation takes a Parameters resource in the body")
    for param in body.get("parameter") or []:
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise InvalidRequestError(
                "Every Parameters.parameter needs a name", expression=("Parameters.parameter",)
            )
        value = next((param[k] for k in _PRIMITIVES if k in param), None)
        if value is not None:
            pairs.append((param["name"], str(value).lower() if isinstance(value, bool) else str(value)))
    return pairs


def parse_types(values: list[str]) -> tuple[str, ...]:
    """Parse `_type` values (comma-separated, possibly repeated) into checked resource types."""
    types: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            try:
                check_type(name)
            except NotFoundError:
                raise InvalidRequestError(
                    f"_type: unknown resource type {name!r}",
                    expression=("_type",),
                    message_id="MSG_PARAM_INVALID",
                ) from None
            if name not in types:
                types.append(name)
    return tuple(types)


def parse_since(value: str | None) -> datetime | None:
    """Parse `_since` (an instant) into a naive-UTC datetime."""
    if value is None or value == "":
        return None
    try:
        return parse_date_range(value)[0]
    except InvalidRequestError:
        raise InvalidRequestError(
            f"_since {value!r} is not a FHIR instant", expression=("_since",), message_id="MSG_DATE_FORMAT"
        ) from None


def _last(pairs: list[tuple[str, str]], name: str) -> str | None:
    found = None
    for key, value in pairs:
        if key == name:
            found = value
    return found


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not is_digits(value):
        raise InvalidRequestError(
            f"Invalid _cursor {value!r}", expression=("_cursor",), message_id="MSG_PARAM_INVALID"
        )
    return int(value)


@register("Patient", "everything", instance=True)
def everything(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str
) -> FhirResponse:
    """Answer Patient/{id}/$everything with a paged searchset Bundle."""
    if not ctx.can("Patient", "r"):
        raise ForbiddenError(
            "Reading Patient records is not allowed for this client", message_id="MSG_FORBIDDEN"
        )
    current(repo, "Patient", id_, ctx)
    pairs = operation_params(req)
    types = parse_types([v for k, v in pairs if k == "_type"])
    if not ctx.unrestricted:  # only types the caller may read; each entry is still judged below
        # Owned types (a client's Subscriptions) are no part of a patient's record: left out
        # unless `_type` names them (then, like any confined type, the total is not given).
        wanted = types or tuple(t for t in resource_types() if t not in OWNED_TYPES)
        types = tuple(t for t in wanted if ctx.can(t, "r"))
    since = parse_since(_last(pairs, "_since"))
    count = page_size(_last(pairs, "_count"), default=req.default_count, maximum=req.max_count)
    cursor = _cursor(_last(pairs, "_cursor"))
    page = repo.everything(id_, since=since, types=types, count=count, cursor=cursor)
    base = req.base_url.rstrip("/")
    keep: list[tuple[str, str]] = [("_count", str(count))]
    if since is not None:
        keep.append(("_since", _last(pairs, "_since") or ""))
    if types:
        keep.append(("_type", ",".join(types)))
    path = f"{base}/Patient/{id_}/$everything"
    links = [
        ("self", path + "?" + urllib.parse.urlencode(keep + ([("_cursor", str(cursor))] if cursor else [])))
    ]
    if page.next_cursor is not None:
        links.append(
            ("next", path + "?" + urllib.parse.urlencode([*keep, ("_cursor", str(page.next_cursor))]))
        )
    shown = visible(ctx, page.entries, "r")
    entries = [
        Entry({"fullUrl": f"{base}/{s.type}/{s.id}", "search": {"mode": "match"}}, s.body) for s in shown
    ]
    total = page.total if len(shown) == len(page.entries) and not _confined(ctx, types) else None
    text = bundle_text("searchset", entries, total=total, links=links)
    return FhirResponse(200, text, {"Content-Type": "application/fhir+json"})


def _confined(ctx: AccessContext, types: tuple[str, ...]) -> bool:
    return any(ctx.confined(t, "r") for t in types)


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare Patient/$everything."""
    for entry in statement["rest"][0]["resource"]:
        if entry["type"] == "Patient":
            entry.setdefault("operation", []).append(
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            )
