"""The store's search parameter types (server.store.search_types): one module per type, one registry.

The registry is all the store knows of types: it must cover every type the indexer writes
rows for, with each IndexRows field going to a table that has its columns.
"""

from __future__ import annotations

import dataclasses

import pytest

from server.fhir.search import indexer
from server.store import indexes
from server.store.search_types import TYPES

TABLE_TYPES = ("token", "string", "date", "number", "quantity", "reference", "uri")


def test_every_indexed_type_is_registered_once() -> None:
    assert sorted(TYPES) == sorted(TABLE_TYPES)
    assert sorted(TYPES) == sorted(indexer._ADDERS)
    assert len({t.table for t in TYPES.values()}) == len(TYPES)


def test_every_index_row_kind_has_a_type() -> None:
    fields = [f.name for f in dataclasses.fields(indexer.IndexRows)]
    assert sorted(t.rows for t in TYPES.values()) == sorted(fields)
    assert {attr for attr, _, _ in indexes._ROW_KINDS} == set(fields)


@pytest.mark.parametrize("name", TABLE_TYPES)
def test_a_types_columns_and_sort_columns_exist(name: str) -> None:
    sql_type = TYPES[name]
    columns = set(sql_type.table.__table__.c.keys())
    assert {"res_pk", "param", "grp"} <= columns
    assert {"grp" if c == "group" else c for c in sql_type.columns} <= columns
    assert set(sql_type.sort) <= columns
