"""uri search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#uri
"""

from __future__ import annotations

from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import UriValue
from server.fhir.search.query import Value
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import UriRow
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import unescape


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """The URI as given (unescaped)."""
    return UriValue(unescape(raw))


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    if isinstance(value, str) and value:
        rows.uris.append(UriRow(param, value, group))
        if type_ == "canonical" and "|" in value:
            rows.uris.append(UriRow(param, value.split("|", 1)[0], group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """Whether one index row matches one search value, as the SQL condition decides."""
    if not isinstance(v, UriValue):
        return False
    if modifier == "below":
        return bool(row.uri.startswith(v.uri))
    return bool(row.uri == v.uri) if modifier is None else False


URI = register(
    FhirType(
        "uri", frozenset({"below", "above", "missing"}), parse=parse, index=index, rows="uris", match=match
    )
)
