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

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from server.fhir.search.dates import DATE_MAX
from server.fhir.search.dates import DATE_MIN
from server.fhir.search.dates import parse_date_range
from server.fhir.search.definitions import compartment_kinds
from server.fhir.search.definitions import compartment_params
from server.fhir.search.definitions import params_for
from server.fhir.search.extract import compile_expression
from server.fhir.search.extract import compile_path
from server.fhir.search.extract import element_keys
from server.fhir.search.fhirpath import Node
from server.fhir.search.fhirpath import parse
from server.fhir.search.fhirpath import split_union
from server.fhir.search.rows import Adder
from server.fhir.search.rows import DateRow
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import NumberRow
from server.fhir.search.rows import QuantityRow
from server.fhir.search.rows import ReferenceRow
from server.fhir.search.rows import StringRow
from server.fhir.search.rows import TokenRow
from server.fhir.search.rows import UriRow
from server.fhir.search.rows import normalize_string
from server.fhir.search.types import TYPES
from server.fhir.search.types.reference import parse_reference

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

_UNINDEXED = frozenset({"_id", "_lastUpdated"})  # columns of the resource table


def composite_param(name: str, index: int) -> str:
    """Return the row param of component ``index`` (0-based) of composite ``name``."""
    return f"{name}${index}"


# What each type's values become (server.fhir.search.types.<type>.index).
_ADDERS: dict[str, Adder] = {name: t.index for name, t in TYPES.items() if t.index is not None}


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


def compartments_of(resource: dict[str, Any], kinds: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """Return the (compartment kind, owner id) pairs the resource belongs to (of `kinds` only, if given)."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    found: dict[tuple[str, str], None] = {}
    for kind, extractors in _compartment_plans(str(rtype)):
        if kinds is not None and kind not in kinds:
            continue
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
