"""Match parsed search tests against one resource in memory (the same index rows SQL searches).

https://hl7.org/fhir/R4B/search.html

Used where a decision is about one version rather than the current table, e.g. the scope
parameter restrictions of `patient/Observation.rs?category=...`, which must hold for every
version that history or vread returns. Mirrors server.store.searching for the value kinds a
restriction uses (token, string, reference, uri, date, number, _id, :missing, :not); a test
it cannot decide in memory (chains, _has, composites, quantities, _lastUpdated) does not
match, so an access decision built on it fails closed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from server.fhir.search.indexer import IndexRows
from server.fhir.search.indexer import index_resource
from server.fhir.search.query import IdTest
from server.fhir.search.query import MissingTest
from server.fhir.search.query import ParamTest
from server.fhir.search.query import Value
from server.fhir.search.types import TYPES

# The types decided in memory: IndexRows field and matcher (server.fhir.search.types.<type>.match).
_ROWS: dict[str, tuple[str, Callable[[Any, Value, str | None], bool]]] = {
    name: (t.rows, t.match) for name, t in TYPES.items() if t.rows is not None and t.match is not None
}
_MODIFIERS = {None, "not", "exact", "contains", "text", "below"}


def _rows(rows: IndexRows, type_: str, param: str) -> list[Any] | None:
    kind = _ROWS.get(type_)
    if kind is None:
        return None
    return [r for r in getattr(rows, kind[0]) if r.param == param]


def _test(test: Any, resource: dict[str, Any], rows: IndexRows) -> bool:
    if isinstance(test, IdTest):
        return (resource.get("id") in test.ids) != test.negate
    if isinstance(test, MissingTest):
        found = _rows(rows, test.type, test.param)
        if found is None:
            return False
        return (not found) == test.missing
    if isinstance(test, ParamTest) and test.type in _ROWS and test.modifier in _MODIFIERS:
        found = _rows(rows, test.type, test.param) or []
        cond = _ROWS[test.type][1]
        modifier = None if test.modifier == "not" else test.modifier
        hit = any(cond(r, v, modifier) for r in found for v in test.values)
        return not hit if test.modifier == "not" else hit
    return False


def matches(tests: Iterable[Any], resource: dict[str, Any]) -> bool:
    """Return whether the resource satisfies every test (AND), as a SQL search would."""
    tests = tuple(tests)
    if not tests:
        return True
    rows = index_resource(resource, only=frozenset(t.param for t in tests if hasattr(t, "param")))
    return all(_test(t, resource, rows) for t in tests)
