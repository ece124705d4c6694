"""date search parameters in idx_date, and _lastUpdated on the resource row.

https://hl7.org/fhir/R4B/search.html#date
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import RangeValue
from server.fhir.search.query import Value
from server.store.index_models import DateIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """moment + delta, saturated at the ends of the datetime range (ap near year 1 or 9999)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def range_condition(low: Any, high: Any, v: RangeValue) -> Clause:
    """Target range [low, high) against the search range [v.low, v.high) under v.prefix."""
    prefix, sl, sh = v.prefix, v.low, v.high
    if prefix == "eq":
        return sa.and_(low >= sl, high <= sh)
    if prefix == "ne":
        return sa.or_(low < sl, high > sh)
    if prefix == "gt":
        return high > sh
    if prefix == "lt":
        return low < sl
    if prefix == "ge":
        return high > sl
    if prefix == "le":
        return low < sh
    if prefix == "sa":
        return low >= sh
    if prefix == "eb":
        return high <= sl
    gap = abs(datetime.now() - sl) / 10
    widen = max(gap, sh - sl, timedelta(days=1))
    return sa.and_(low < _shift(sh, widen), high > _shift(sl, -widen))


def point_condition(col: Any, v: RangeValue) -> Clause:
    """A point in time (resource.last_updated) against a search range."""
    prefix, sl, sh = v.prefix, v.low, v.high
    if prefix == "eq":
        return sa.and_(col >= sl, col < sh)
    if prefix == "ne":
        return sa.or_(col < sl, col >= sh)
    if prefix in ("gt", "sa"):
        return col >= sh
    if prefix in ("lt", "eb"):
        return col < sl
    if prefix == "ge":
        return col >= sl
    if prefix == "le":
        return col < sh
    widen = max(abs(datetime.now() - sl) / 10, sh - sl, timedelta(days=1))
    return sa.and_(col >= _shift(sl, -widen), col < _shift(sh, widen))


def condition(d: Any, v: Value, modifier: str | None) -> Clause:
    """One date value on an idx_date row (its [low, high) range)."""
    assert isinstance(v, RangeValue)
    return range_condition(d.low, d.high, v)


DATE = register(
    SqlType(
        "date",
        DateIndex,
        rows="dates",
        columns=("param", "low", "high", "group"),
        condition=condition,
        sort=("low", "high"),
    )
)
