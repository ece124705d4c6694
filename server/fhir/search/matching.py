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
from server.fhir.search.query import RangeValue
from server.fhir.search.query import ReferenceValue
from server.fhir.search.query import TextValue
from server.fhir.search.query import TokenValue
from server.fhir.search.query import UriValue
from server.fhir.search.query import Value


def _token(row: Any, v: Value, modifier: str | None) -> bool:
    if isinstance(v, TextValue):
        text = row.text or ""
        return text.startswith(v.text) or (" " + v.text) in text
    if not isinstance(v, TokenValue):
        return False
    if v.system is not None and (row.system is not None if v.system == "" else row.system != v.system):
        return False
    return v.code is None or row.code == v.code


def _string(row: Any, v: Value, modifier: str | None) -> bool:
    if not isinstance(v, TextValue):
        return False
    if modifier == "exact":
        return bool(row.exact == v.text)
    if modifier == "contains":
        return v.text in row.norm
    return bool(row.norm.startswith(v.text))


def _reference(row: Any, v: Value, modifier: str | None) -> bool:
    if not isinstance(v, ReferenceValue):
        return False
    if v.id is None:
        return bool(row.url == v.url)
    local = row.target_id == v.id and (v.type is None or row.target_type == v.type)
    return bool(local or (v.url and row.url == v.url))


def _uri(row: Any, v: Value, modifier: str | None) -> bool:
    if not isinstance(v, UriValue):
        return False
    if modifier == "below":
        return bool(row.uri.startswith(v.uri))
    return bool(row.uri == v.uri) if modifier is None else False


def _date(row: Any, v: Value, modifier: str | None) -> bool:
    """Target range [low, high) against the search range, as searching._date_cond."""
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


def _number(row: Any, v: Value, modifier: str | None) -> bool:
    """A number against [low, high) or the value, as searching._number_cond."""
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


_ROWS: dict[str, tuple[str, Callable[[Any, Value, str | None], bool]]] = {
    "token": ("tokens", _token),
    "string": ("strings", _string),
    "reference": ("references", _reference),
    "uri": ("uris", _uri),
    "date": ("dates", _date),
    "number": ("numbers", _number),
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
