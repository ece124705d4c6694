"""number search parameters in idx_number (https://hl7.org/fhir/R4B/search.html#number)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import QuantityValue
from server.fhir.search.query import RangeValue
from server.fhir.search.query import Value
from server.store.index_models import NumberIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def range_condition(col: Any, v: RangeValue | QuantityValue, value: Any, low: Any, high: Any) -> Clause:
    """A number column against the value (or its implicit range [low, high)) under v.prefix."""
    prefix = v.prefix
    if prefix == "eq":
        return sa.and_(col >= low, col < high)
    if prefix == "ne":
        return sa.or_(col < low, col >= high)
    if prefix in ("gt", "sa"):
        return col > value
    if prefix in ("lt", "eb"):
        return col < value
    if prefix == "ge":
        return col >= value
    if prefix == "le":
        return col <= value
    margin = abs(value) / 10  # ap: within 10 %
    return sa.and_(col >= value - margin, col <= value + margin)


def condition(n: Any, v: Value, modifier: str | None) -> Clause:
    """One number value on an idx_number row."""
    assert isinstance(v, RangeValue)
    return range_condition(n.value, v, v.value, v.low, v.high)


NUMBER = register(
    SqlType(
        "number",
        NumberIndex,
        rows="numbers",
        columns=("param", "value", "group"),
        condition=condition,
        sort=("value", "value"),
    )
)
