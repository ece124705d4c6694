"""string search parameters in idx_string (https://hl7.org/fhir/R4B/search.html#string)."""

from __future__ import annotations

from typing import Any

from server.fhir.search.query import TextValue
from server.fhir.search.query import Value
from server.store.index_models import StringIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def condition(s: Any, v: Value, modifier: str | None) -> Clause:
    """Starts with (normalised), :exact or :contains on an idx_string row."""
    assert isinstance(v, TextValue)
    if modifier == "exact":
        return s.exact == v.text  # type: ignore[no-any-return]
    if modifier == "contains":
        return s.norm.contains(v.text, autoescape=True)  # type: ignore[no-any-return]
    return s.norm.startswith(v.text, autoescape=True)  # type: ignore[no-any-return]


STRING = register(
    SqlType(
        "string",
        StringIndex,
        rows="strings",
        columns=("param", "norm", "exact", "group"),
        condition=condition,
        sort=("norm", "norm"),
    )
)
