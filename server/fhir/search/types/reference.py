"""reference search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#reference
"""

from __future__ import annotations

from typing import Any

from server.fhir.resources import ID_RE
from server.fhir.search.definitions import SearchParam
from server.fhir.search.definitions import is_resource_type
from server.fhir.search.query import ReferenceValue
from server.fhir.search.query import Value
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import ReferenceRow
from server.fhir.search.rows import TokenRow
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import bad
from server.fhir.search.values import unescape


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """[type/]id, a URL of this server (made local), or an absolute URL; :Type names the target."""
    raw = unescape(raw)
    text = raw
    if base_url and text.startswith(base_url):
        text = text[len(base_url) :]
    text = text.split("/_history/", 1)[0]
    if "://" in text or text.startswith("urn:"):
        return ReferenceValue(None, None, url=raw)
    if "/" in text:
        type_, _, id_ = text.rpartition("/")
        if "/" in type_ or not is_resource_type(type_) or not ID_RE.match(id_):
            return ReferenceValue(None, None, url=raw)  # as parse_reference indexes it
        if modifier and modifier != type_:
            raise bad(f"Reference {raw!r} is not a {modifier}", sp.name)
        return ReferenceValue(type_, id_)
    if not text:
        raise bad(f"Empty reference for parameter {sp.name}", sp.name)
    type_ = modifier or (sp.targets[0] if len(sp.targets) == 1 else None)
    return ReferenceValue(type_, text, url=None if modifier else raw)


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """Split a reference into (target type, target id, url): url set when not a local Type/id."""
    if ref.startswith(("#", "urn:")) or "?" in ref:
        return None, None, ref
    parts = ref.split("/_history/", 1)[0].split("/")
    # Type/id only with an id a resource can have (1-64 of A-Z a-z 0-9 - .): anything else names
    # no resource of this server and is kept as the URL as written (and in no compartment).
    if len(parts) >= 2 and is_resource_type(parts[-2]) and ID_RE.match(parts[-1]):
        if len(parts) == 2:
            return parts[0], parts[1], None
        return parts[-2], parts[-1], ref
    return None, None, ref


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    if isinstance(value, str):  # canonical or uri
        rows.references.append(ReferenceRow(param, None, None, value, group))
        if "|" in value:
            rows.references.append(ReferenceRow(param, None, None, value.split("|", 1)[0], group))
        return
    if not isinstance(value, dict):
        return
    if "resourceType" in value:  # an inline resource, as in Bundle.entry[0].resource
        if value.get("id"):
            rows.references.append(ReferenceRow(param, value["resourceType"], value["id"], None, group))
        return
    ref = value.get("reference")
    if isinstance(ref, str) and ref:
        rows.references.append(ReferenceRow(param, *parse_reference(ref), group))
    ident = value.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        rows.tokens.append(TokenRow(f"{param}:identifier", ident.get("system"), ident["value"], None, group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """Whether one index row matches one search value, as the SQL condition decides."""
    if not isinstance(v, ReferenceValue):
        return False
    if v.id is None:
        return bool(row.url == v.url)
    local = row.target_id == v.id and (v.type is None or row.target_type == v.type)
    return bool(local or (v.url and row.url == v.url))


# Besides these, a resource type names the target type (:Patient), see server.fhir.search.params.
REFERENCE = register(
    FhirType(
        "reference",
        frozenset({"identifier", "missing"}),
        parse=parse,
        index=index,
        rows="references",
        match=match,
    )
)
