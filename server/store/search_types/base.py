"""What the store knows of one search parameter type, and the registry of them.

Each module beside this one describes one type: the idx_* table its index rows go to (the
ORM class in server.store.index_models), which IndexRows attribute holds them and which of
their fields become columns, the SQL condition of one search value on that table, and the
columns a _sort on it orders by. server.store.indexes writes rows and server.store.searching
builds WHERE and ORDER BY clauses through TYPES only. Adding a type: docs/search-types.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import Value

Clause = sa.ColumnElement[bool]
# (aliased index table, one search value, the modifier or None) -> condition on that table's row
Condition = Callable[[Any, Value, "str | None"], Clause]


@dataclass(frozen=True, slots=True)
class SqlType:
    """One search parameter type in the database (SearchParameter.type code `name`)."""

    name: str
    table: Any  # the ORM class of the type's idx_* table
    rows: str  # the server.fhir.search.indexer.IndexRows attribute holding the type's rows
    columns: tuple[str, ...]  # row fields copied to columns ("group" is stored as grp)
    condition: Condition
    sort: tuple[str, str]  # the column sorted by, ascending and descending


TYPES: dict[str, SqlType] = {}


def register(sql_type: SqlType) -> SqlType:
    """Add a type to the registry (each type module calls this once, at import)."""
    TYPES[sql_type.name] = sql_type
    return sql_type
