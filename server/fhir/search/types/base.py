"""What the FHIR layer knows of one search parameter type, and the registry of them.

Each module beside this one is one type: how a search value of it is parsed (and which
modifiers it takes), which index rows a resource's values of it become, and how such a row
is matched in memory. server.fhir.search.params, .indexer and .matching reach the types
through TYPES only; the value dataclasses are in server.fhir.search.query and the row
dataclasses in server.fhir.search.rows. The store's side is server.store.search_types.
Adding a type: docs/search-types.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import Value
from server.fhir.search.rows import Adder

# (raw value, the parameter, its modifier or None, the server's base URL + "/" or None) -> value
Parse = Callable[[str, SearchParam, "str | None", "str | None"], Value]
# (one index row, one search value, the modifier or None) -> whether the row matches
Match = Callable[[Any, Value, "str | None"], bool]


@dataclass(frozen=True, slots=True)
class FhirType:
    """One search parameter type (SearchParameter.type code `name`)."""

    name: str
    modifiers: frozenset[str]  # the modifiers a parameter of the type takes
    parse: Parse | None = None  # None: not parsed as a plain value (composite)
    index: Adder | None = None  # adds a value's rows to IndexRows; None: not indexed by itself
    rows: str | None = None  # the IndexRows field holding the type's rows (read by `match`)
    match: Match | None = None  # None: not decided in memory (access decisions then fail closed)
    sortable: bool = True  # whether _sort may name a parameter of the type


TYPES: dict[str, FhirType] = {}


def register(fhir_type: FhirType) -> FhirType:
    """Add a type to the registry (each type module calls this once, at import)."""
    TYPES[fhir_type.name] = fhir_type
    return fhir_type
