"""Derive the search index rows and compartment memberships of a resource.

https://hl7.org/fhir/R4B/search.html

Pure functions over the resource JSON: every search parameter of the resource type is
evaluated with its compiled extractor and each value becomes rows of the table of its
parameter type (idx_token, idx_string, idx_date, idx_number, idx_quantity, idx_reference,
idx_uri). Encodings the query side relies on:

- Composite parameters: for each occurrence of the composite's element, the rows of
  component ``i`` are emitted with param ``composite_param(name, i)`` (``name$i``) and a
  ``group`` ordinal shared by the rows of that occurrence (unique within the resource).
- Range values (quantity and number parameters): a row for the low bound with param
  ``name:low`` and one for the high bound with ``name:high`` (absent bounds are left out);
  both carry the same ``group``, so a query can require low <= x <= high on one Range.
- Identifier: (system, value) row, plus ``name:of-type`` rows with system =
  type.coding.system and code = ``f"{type.coding.code}|{value}"``.
- Reference.identifier: a token row with param ``name:identifier``.
- canonical values (reference and uri parameters): the url as given, plus the url without
  ``|version`` when it has one.
- Dates: half-open naive-UTC ranges; open Period ends are DATE_MIN and DATE_MAX.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from decimal import Decimal
from decimal import InvalidOperation
from functools import cache
from functools import lru_cache
from typing import Any

from server.errors import InvalidRequestError
from server.fhir.search.dates import DATE_MAX
from server.fhir.search.dates import DATE_MIN
from server.fhir.search.dates import parse_date_range
from server.fhir.search.definitions import compartment_kinds
from server.fhir.search.definitions import compartment_params
from server.fhir.search.definitions import is_resource_type
from server.fhir.search.definitions import params_for
from server.fhir.search.extract import compile_expression
from server.fhir.search.extract import compile_path
from server.fhir.search.extract import element_keys
from server.fhir.search.fhirpath import Node
from server.fhir.search.fhirpath import parse
from server.fhir.search.fhirpath import split_union
from server.fhir.search.ucum import canonical

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "DateRow",
    "IndexRows",
    "NumberRow",
    "QuantityRow",
    "ReferenceRow",
    "StringRow",
    "TokenRow",
    "UriRow",
    "compartments_of",
    "composite_param",
    "index_resource",
    "normalize_string",
    "parse_date_range",
    "parse_reference",
]

UCUM = "http://unitsofmeasure.org"
CURRENCY = "urn:iso:std:iso:4217"
_UNINDEXED = frozenset({"_id", "_lastUpdated"})  # columns of the resource table


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token value: system|code, plus normalised display text for :text."""

    param: str
    system: str | None
    code: str | None
    text: str | None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class StringRow:
    """A string value, normalised (case and accent folded) and exact."""

    param: str
    norm: str
    exact: str
    group: int | None = None


@dataclass(frozen=True, slots=True)
class DateRow:
    """A date value as the half-open naive-UTC range [low, high)."""

    param: str
    low: datetime
    high: datetime
    group: int | None = None


@dataclass(frozen=True, slots=True)
class NumberRow:
    """A number value."""

    param: str
    value: Decimal
    group: int | None = None


@dataclass(frozen=True, slots=True)
class QuantityRow:
    """A quantity value, with its UCUM canonical form where the unit converts."""

    param: str
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None
    canon_value: float | None
    canon_code: str | None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """A reference: local Type/id, and the url when absolute, contained or canonical."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class UriRow:
    """A uri value."""

    param: str
    uri: str
    group: int | None = None


@dataclass(slots=True)
class IndexRows:
    """All index rows of one resource version, by table."""

    tokens: list[TokenRow] = field(default_factory=list)
    strings: list[StringRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)


def normalize_string(value: str) -> str:
    """Fold case and accents and collapse whitespace, for string search matching."""
    if not value.isascii():
        decomposed = unicodedata.normalize("NFKD", value)
        value = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(value.casefold().split())


def composite_param(name: str, index: int) -> str:
    """Return the row param of component ``index`` (0-based) of composite ``name``."""
    return f"{name}${index}"


# -- values -> rows ------------------------------------------------------------------------

Adder = Callable[[IndexRows, str, str, Any, "int | None"], None]


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _text(value: Any) -> str | None:
    return _cached_normalize(value) if isinstance(value, str) and value else None


@lru_cache(maxsize=8192)
def _cached_normalize(value: str) -> str:
    return normalize_string(value)  # displays repeat across resources (LOINC, SNOMED CT)


def _add_token(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    out = rows.tokens
    if type_ == "CodeableConcept":
        text = value.get("text")
        displays = set()
        for coding in value.get("coding", ()):
            display = coding.get("display") or text
            displays.add(display)
            out.append(TokenRow(param, coding.get("system"), coding.get("code"), _text(display), group))
        if isinstance(text, str) and text and text not in displays:
            out.append(TokenRow(param, None, None, _text(text), group))
    elif type_ == "Coding":
        out.append(
            TokenRow(param, value.get("system"), value.get("code"), _text(value.get("display")), group)
        )
    elif type_ == "Identifier":
        _add_identifier(out, param, value, group)
    elif type_ == "ContactPoint":
        if value.get("value"):
            out.append(TokenRow(param, None, value["value"], None, group))
    elif type_ == "boolean":
        if isinstance(value, bool):
            out.append(TokenRow(param, None, "true" if value else "false", None, group))
    elif isinstance(value, str):
        out.append(TokenRow(param, None, value, None, group))
    elif type_ == "Reference" and isinstance(value.get("identifier"), dict):
        _add_identifier(out, param, value["identifier"], group)


def _add_identifier(out: list[TokenRow], param: str, value: dict[str, Any], group: int | None) -> None:
    ident = value.get("value")
    if not isinstance(ident, str):
        return
    type_ = value.get("type") or {}
    out.append(TokenRow(param, value.get("system"), ident, _text(type_.get("text")), group))
    for coding in type_.get("coding", ()):
        if coding.get("code"):
            code = f"{coding['code']}|{ident}"
            out.append(TokenRow(f"{param}:of-type", coding.get("system"), code, None, group))


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _add_string(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
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


def _add_date(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
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


def _add_number(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    if type_ == "Range":
        for bound in ("low", "high"):
            number = _decimal((value.get(bound) or {}).get("value"))
            if number is not None:
                rows.numbers.append(NumberRow(f"{param}:{bound}", number, group))
        return
    number = _decimal(value.get("value") if isinstance(value, dict) else value)
    if number is not None:
        rows.numbers.append(NumberRow(param, number, group))


def _quantity_row(param: str, value: dict[str, Any], group: int | None) -> QuantityRow | None:
    number = _decimal(value.get("value"))
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


def _add_quantity(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    if not isinstance(value, dict):
        number = _decimal(value)
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


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """Split a reference into (target type, target id, url): url set when not a local Type/id."""
    if ref.startswith(("#", "urn:")) or "?" in ref:
        return None, None, ref
    parts = ref.split("/_history/", 1)[0].split("/")
    if len(parts) >= 2 and is_resource_type(parts[-2]) and parts[-1]:
        if len(parts) == 2:
            return parts[0], parts[1], None
        return parts[-2], parts[-1], ref
    return None, None, ref


def _add_reference(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
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


def _add_uri(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    if isinstance(value, str) and value:
        rows.uris.append(UriRow(param, value, group))
        if type_ == "canonical" and "|" in value:
            rows.uris.append(UriRow(param, value.split("|", 1)[0], group))


_ADDERS: dict[str, Adder] = {
    "token": _add_token,
    "string": _add_string,
    "date": _add_date,
    "number": _add_number,
    "quantity": _add_quantity,
    "reference": _add_reference,
    "uri": _add_uri,
}


# -- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: plans are dict keys
class _Plan:
    name: str
    adder: Adder | None  # None for composites
    extract: Callable[[dict[str, Any]], list[tuple[str, Any]]]
    components: tuple[tuple[Adder, Callable[..., Any]], ...] = ()


def _root_keys(expr: str, resource_type: str) -> frozenset[str] | None:
    """Return the top-level JSON keys an expression can read, or None if it may read any."""
    keys: set[str] = set()
    for operand in split_union(parse(expr)):
        chain = _flatten(operand)
        if chain[0][0] == "member" and chain[0][1][:1].isupper():
            chain = chain[1:]
        if not chain or chain[0][0] != "member":
            return None
        keys.update(k for k, _ in element_keys(resource_type, chain[0][1]))
    return frozenset(keys)


def _flatten(node: Node) -> list[Node]:
    if node[0] == "dot":
        return _flatten(node[1]) + [node[2]]
    if node[0] in ("index", "as"):
        return _flatten(node[1]) + [("op",)]
    return [node]


@cache
def _plans(resource_type: str) -> tuple[tuple[_Plan, ...], dict[str, tuple[_Plan, ...]]]:
    """Return the always-run plans and the plans keyed by the top-level key they need."""
    always: list[_Plan] = []
    keyed: dict[str, list[_Plan]] = {}
    for sp in params_for(resource_type).values():
        if sp.name in _UNINDEXED:
            continue
        if sp.type == "composite":
            comps = tuple((_ADDERS[t], compile_path(expr)) for t, expr, _ in sp.components if t in _ADDERS)
            if len(comps) != len(sp.components):
                continue
            plan = _Plan(sp.name, None, compile_expression(sp.expression), comps)
        elif sp.type in _ADDERS:
            plan = _Plan(sp.name, _ADDERS[sp.type], compile_expression(sp.expression))
        else:
            continue  # special (near): not indexed
        keys = _root_keys(sp.expression, resource_type)
        if keys is None:
            always.append(plan)
        for key in keys or ():
            keyed.setdefault(key, []).append(plan)
    return tuple(always), {k: tuple(v) for k, v in keyed.items()}


def index_resource(resource: dict[str, Any], only: frozenset[str] | None = None) -> IndexRows:
    """Return the index rows of every search parameter of the resource's type (or of `only` those)."""
    rows = IndexRows()
    always, keyed = _plans(str(resource.get("resourceType")))
    todo: dict[_Plan, None] = dict.fromkeys(always)
    for key in resource:
        plans = keyed.get(key)
        if plans:
            todo.update(dict.fromkeys(plans))
    if only is not None:
        todo = {plan: None for plan in todo if plan.name in only}
    group = 0
    for plan in todo:
        values = plan.extract(resource)
        if not values:
            continue
        if plan.adder is not None:
            for type_, value in values:
                plan.adder(rows, plan.name, type_, value, None)
            continue
        for context in values:
            parts = _component_values(plan, context, resource)
            if parts is None:
                continue
            group += 1
            for i, ((adder, _), items) in enumerate(zip(plan.components, parts, strict=True)):
                param = composite_param(plan.name, i)
                for type_, value in items:
                    adder(rows, param, type_, value, group)
    return rows


def _component_values(
    plan: _Plan, context: Any, resource: dict[str, Any]
) -> list[list[tuple[str, Any]]] | None:
    """Return each component's values in one occurrence, or None if one has none."""
    # An occurrence lacking a component can never match the composite, so it gets no rows;
    # the value component is the one usually missing, so it is evaluated first.
    parts: list[list[tuple[str, Any]]] = []
    for _, run in reversed(plan.components):
        values = _typed(run([context], resource))
        if not values:
            return None
        parts.append(values)
    parts.reverse()
    return parts


def _typed(items: list[tuple[Any, Any]]) -> list[tuple[str, Any]]:
    return [(t, v) for t, v in items if t is not None and t != "Extension"]


@cache
def _compartment_plans(resource_type: str) -> tuple[tuple[str, tuple[Callable[..., Any], ...]], ...]:
    params = params_for(resource_type)
    return tuple(
        (kind, tuple(compile_expression(params[p].expression) for p in names if p in params))
        for kind in compartment_kinds()
        if (names := compartment_params(kind, resource_type)) or kind == resource_type
    )


def compartments_of(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (compartment kind, owner id) pairs the resource belongs to."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    found: dict[tuple[str, str], None] = {}
    for kind, extractors in _compartment_plans(str(rtype)):
        if kind == rtype and isinstance(rid, str):
            found[(kind, rid)] = None
        for extract in extractors:
            for type_, value in extract(resource):
                if type_ != "Reference" or not isinstance(value.get("reference"), str):
                    continue
                target_type, target_id, _ = parse_reference(value["reference"])
                if target_type == kind and target_id:
                    found[(kind, target_id)] = None
    return list(found)
