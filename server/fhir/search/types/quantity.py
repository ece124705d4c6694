"""quantity search parameters: parse and index rows (not matched in memory).

https://hl7.org/fhir/R4B/search.html#quantity
"""

from __future__ import annotations

from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import QuantityValue
from server.fhir.search.query import Value
from server.fhir.search.rows import CURRENCY
from server.fhir.search.rows import UCUM
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import QuantityRow
from server.fhir.search.rows import decimal_of
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.ucum import canonical
from server.fhir.search.values import bad
from server.fhir.search.values import parse_number
from server.fhir.search.values import split_escaped
from server.fhir.search.values import split_prefix
from server.fhir.search.values import unescape


def parse_quantity(raw: str, param: str) -> QuantityValue:
    """[prefix]number|system|code, with its UCUM base-unit form when the unit converts."""
    parts = split_escaped(raw, "|")
    if len(parts) > 3:
        raise bad(f"Invalid quantity {raw!r} for parameter {param}", param)
    prefix, text = split_prefix(parts[0])
    number, low, high = parse_number(text, param)
    system = unescape(parts[1]) if len(parts) > 1 and parts[1] else None
    code = unescape(parts[2]) if len(parts) > 2 and parts[2] else None
    canon = None
    if code and system in (None, UCUM):
        canon = canonical(number, code)
    if canon is None:
        return QuantityValue(prefix, number, low, high, system, code)
    canon_low = canonical(low, code)
    canon_high = canonical(high, code)
    return QuantityValue(
        prefix,
        number,
        low,
        high,
        system,
        code,
        canon[1],
        canon_low[0] if canon_low else None,
        canon_high[0] if canon_high else None,
        canon[0],
    )


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """A quantity value of the parameter."""
    return parse_quantity(raw, sp.name)


def _quantity_row(param: str, value: dict[str, Any], group: int | None) -> QuantityRow | None:
    number = decimal_of(value.get("value"))
    if number is None:
        return None
    if "currency" in value:  # Money
        return QuantityRow(param, number, CURRENCY, value["currency"], None, None, None, group)
    system, code, unit = value.get("system"), value.get("code"), value.get("unit")
    canon = canonical(number, code) if code and system in (UCUM, None) else None
    return QuantityRow(
        param,
        number,
        system,
        code,
        unit,
        canon[0] if canon else None,
        canon[1] if canon else None,
        group,
    )


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    if not isinstance(value, dict):
        number = decimal_of(value)
        if number is not None:
            rows.quantities.append(QuantityRow(param, number, None, None, None, None, None, group))
        return
    if type_ == "Range":
        for bound in ("low", "high"):
            row = _quantity_row(f"{param}:{bound}", value.get(bound) or {}, group)
            if row is not None:
                rows.quantities.append(row)
        return
    if type_ == "SampledData":
        return  # a series of numbers, not one quantity
    row = _quantity_row(param, value, group)
    if row is not None:
        rows.quantities.append(row)


QUANTITY = register(FhirType("quantity", frozenset({"missing"}), parse=parse, index=index, rows="quantities"))
