"""reference search parameters in idx_reference (https://hl7.org/fhir/R4B/search.html#reference)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import ReferenceValue
from server.fhir.search.query import Value
from server.store.index_models import ReferenceIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def condition(r: Any, v: Value, modifier: str | None) -> Clause:
    """The local target (type and id, or id) OR the URL as written; an absolute URL alone."""
    assert isinstance(v, ReferenceValue)
    if v.id is None:
        return r.url == v.url  # type: ignore[no-any-return]
    local = r.target_id == v.id if v.type is None else sa.and_(r.target_type == v.type, r.target_id == v.id)
    return sa.or_(local, r.url == v.url) if v.url else local


_COLUMNS = ("param", "target_type", "target_id", "url", "group")
REFERENCE = register(
    SqlType("reference", ReferenceIndex, "references", _COLUMNS, condition, ("target_id", "target_id"))
)
