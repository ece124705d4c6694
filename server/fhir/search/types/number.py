"""number search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#number
"""

from __future__ import annotations

from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import RangeValue
from server.fhir.search.query import Value
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import NumberRow
from server.fhir.search.rows import decimal_of
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import parse_number
from server.fhir.search.values import split_prefix


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """A number with its prefix and the range [low, high) its precision covers."""
    prefix, text = split_prefix(raw)
    number, low, high = parse_number(text, sp.name)
    return RangeValue(prefix, low, high, number)


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    if type_ == "Range":
        for bound in ("low", "high"):
            number = decimal_of((value.get(bound) or {}).get("value"))
            if number is not None:
                rows.numbers.append(NumberRow(f"{param}:{bound}", number, group))
        return
    number = decimal_of(value.get("value") if isinstance(value, dict) else value)
    if number is not None:
        rows.numbers.append(NumberRow(param, number, group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """A number against [low, high) or the value, as server.store.search_types.number."""
    if not isinstance(v, RangeValue):
        return False
    col, value = row.value, v.value
    tests = {
        "eq": lambda: v.low <= col < v.high,
        "ne": lambda: col < v.low or col >= v.high,
        "gt": lambda: col > value,
        "sa": lambda: col > value,
        "lt": lambda: col < value,
        "eb": lambda: col < value,
        "ge": lambda: col >= value,
        "le": lambda: col <= value,
    }
    test = tests.get(v.prefix)
    return bool(test()) if test else False


NUMBER = register(
    FhirType("number", frozenset({"missing"}), parse=parse, index=index, rows="numbers", match=match)
)
