"""date search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#date
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequestError
from server.fhir.search.dates import DATE_MAX
from server.fhir.search.dates import DATE_MIN
from server.fhir.search.dates import parse_date_range
from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import RangeValue
from server.fhir.search.query import Value
from server.fhir.search.rows import DateRow
from server.fhir.search.rows import IndexRows
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import bad
from server.fhir.search.values import split_prefix


def parse_date(raw: str, param: str) -> RangeValue:
    """A date value with its prefix: the range [low, high) its precision covers."""
    prefix, text = split_prefix(raw)
    try:
        low, high = parse_date_range(text)
    except InvalidRequestError:
        raise bad(f"Invalid date {raw!r} for parameter {param}", param) from None
    return RangeValue(prefix, low, high)


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """A date value of the parameter."""
    return parse_date(raw, sp.name)


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    try:
        if isinstance(value, str):
            low, high = parse_date_range(value)
            rows.dates.append(DateRow(param, low, high, group))
        elif type_ == "Period":
            _add_period(rows, param, value, group)
        elif type_ == "Timing":
            for event in value.get("event", ()):
                low, high = parse_date_range(event)
                rows.dates.append(DateRow(param, low, high, group))
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                _add_period(rows, param, bounds, group)
    except InvalidRequestError:
        return  # validated resources do not get here; a bad date is just not searchable


def _add_period(rows: IndexRows, param: str, value: dict[str, Any], group: int | None) -> None:
    start, end = value.get("start"), value.get("end")
    if not start and not end:
        return
    low = parse_date_range(start)[0] if start else DATE_MIN
    high = parse_date_range(end)[1] if end else DATE_MAX
    rows.dates.append(DateRow(param, low, high, group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """Target range [low, high) against the search range, as server.store.search_types.date."""
    if not isinstance(v, RangeValue):
        return False
    low, high, sl, sh = row.low, row.high, v.low, v.high
    tests = {
        "eq": lambda: low >= sl and high <= sh,
        "ne": lambda: low < sl or high > sh,
        "gt": lambda: high > sh,
        "lt": lambda: low < sl,
        "ge": lambda: high > sl,
        "le": lambda: low < sh,
        "sa": lambda: low >= sh,
        "eb": lambda: high <= sl,
    }
    test = tests.get(v.prefix)
    return bool(test()) if test else False  # ap: not decided in memory


DATE = register(FhirType("date", frozenset({"missing"}), parse=parse, index=index, rows="dates", match=match))
