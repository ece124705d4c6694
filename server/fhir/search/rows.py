"""Index rows: what the indexer derives from a resource for each search parameter type.

server.store writes each kind into its idx_* table (server.store.search_types names which);
server.fhir.search.types.<type> makes the rows of its type and matches them in memory.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from decimal import Decimal
from decimal import InvalidOperation
from functools import lru_cache
from typing import Any

UCUM = "http://unitsofmeasure.org"
CURRENCY = "urn:iso:std:iso:4217"


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


Adder = Callable[[IndexRows, str, str, Any, "int | None"], None]


def decimal_of(value: Any) -> Decimal | None:
    """A JSON number (or numeric text) as a Decimal; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def display_text(value: Any) -> str | None:
    """Normalised text of a display (None when empty or not a string), cached."""
    return _cached_normalize(value) if isinstance(value, str) and value else None


@lru_cache(maxsize=8192)
def _cached_normalize(value: str) -> str:
    return normalize_string(value)  # displays repeat across resources (LOINC, SNOMED CT)
