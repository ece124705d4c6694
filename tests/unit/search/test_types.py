"""The FHIR layer's search parameter types (server.fhir.search.types): one module per type, one registry.

Pins what the registry replaced (the modifiers each type takes, the sortable types, the
types indexed and matched in memory) and that the store has a table for every indexed type.
"""

from __future__ import annotations

from server.fhir.search import definitions
from server.fhir.search import indexer
from server.fhir.search import matching
from server.fhir.search import params
from server.fhir.search.types import TYPES
from server.store.search_types import TYPES as SQL_TYPES


def test_modifiers_and_sortable_types_are_as_before() -> None:
    assert params._MODIFIERS == {
        "token": frozenset({"not", "text", "of-type", "missing"}),
        "string": frozenset({"exact", "contains", "missing"}),
        "date": frozenset({"missing"}),
        "number": frozenset({"missing"}),
        "quantity": frozenset({"missing"}),
        "reference": frozenset({"identifier", "missing"}),
        "uri": frozenset({"below", "above", "missing"}),
        "composite": frozenset({"missing"}),
    }
    assert params._SORTABLE == {"token", "string", "date", "number", "quantity", "reference", "uri"}


def test_indexed_and_in_memory_types() -> None:
    indexed = {name for name, t in TYPES.items() if t.index is not None}
    assert indexed == set(indexer._ADDERS) == set(SQL_TYPES)
    assert {name: t.rows for name, t in TYPES.items() if t.index} == {n: t.rows for n, t in SQL_TYPES.items()}
    assert set(matching._ROWS) == {"token", "string", "reference", "uri", "date", "number"}


def test_every_type_the_definitions_use_is_registered_or_special() -> None:
    used = {sp.type for t in definitions.resource_types() for sp in definitions.params_for(t).values()}
    assert used - set(TYPES) <= {"special"}
