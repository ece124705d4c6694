"""string search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#string
"""

from __future__ import annotations

from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import TextValue
from server.fhir.search.query import Value
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import StringRow
from server.fhir.search.rows import normalize_string
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import unescape


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """The text as given for :exact, else normalised (case and accents folded)."""
    text = unescape(raw)
    return TextValue(text if modifier == "exact" else normalize_string(text))


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    if isinstance(value, str):
        if value:
            rows.strings.append(StringRow(param, normalize_string(value), value, group))
        return
    if not isinstance(value, dict):
        return
    parts: tuple[str, ...] = (
        _NAME_PARTS if type_ == "HumanName" else _ADDRESS_PARTS if type_ == "Address" else ()
    )
    if type_ in ("CodeableConcept", "Coding", "ContactPoint"):
        parts = ("text", "display", "value")
    for part in parts:
        found = value.get(part)
        for s in found if isinstance(found, list) else (found,):
            if isinstance(s, str) and s:
                rows.strings.append(StringRow(param, normalize_string(s), s, group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """Whether one index row matches one search value, as the SQL condition decides."""
    if not isinstance(v, TextValue):
        return False
    if modifier == "exact":
        return bool(row.exact == v.text)
    if modifier == "contains":
        return v.text in row.norm
    return bool(row.norm.startswith(v.text))


STRING = register(
    FhirType(
        "string",
        frozenset({"exact", "contains", "missing"}),
        parse=parse,
        index=index,
        rows="strings",
        match=match,
    )
)
