"""quantity search parameters in idx_quantity (https://hl7.org/fhir/R4B/search.html#quantity)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import QuantityValue
from server.fhir.search.query import Value
from server.store.index_models import QuantityIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register
from server.store.search_types.number import range_condition


def condition(q: Any, v: Value, modifier: str | None) -> Clause:
    """A quantity value on an idx_quantity row: in UCUM base units when both convert."""
    assert isinstance(v, QuantityValue)
    if v.canon_code is not None and v.canon_value is not None:
        # Units convert: compare in UCUM base units (5 mg matches 0.005 g).
        return sa.and_(
            q.canon_code == v.canon_code,
            range_condition(q.canon_value, v, v.canon_value, v.canon_low, v.canon_high),
        )
    conds = [range_condition(q.value, v, v.value, v.low, v.high)]
    if v.system is not None:
        conds.append(q.system == v.system)
    if v.code is not None:
        conds.append(q.code == v.code if v.system is not None else sa.or_(q.code == v.code, q.unit == v.code))
    return sa.and_(*conds)


_COLUMNS = ("param", "value", "system", "code", "unit", "canon_value", "canon_code", "group")
QUANTITY = register(SqlType("quantity", QuantityIndex, "quantities", _COLUMNS, condition, ("value", "value")))
