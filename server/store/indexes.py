"""Write a resource version's search index rows and compartment memberships.

Rows come from server.fhir.search.indexer (pure); here they become idx_* table rows in the
same transaction as the resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.index_models import CompartmentMembership
from server.store.index_models import DateIndex
from server.store.index_models import NumberIndex
from server.store.index_models import QuantityIndex
from server.store.index_models import ReferenceIndex
from server.store.index_models import StringIndex
from server.store.index_models import TokenIndex
from server.store.index_models import UriIndex

if TYPE_CHECKING:
    from server.fhir.repository import WriteRequest

INDEX_TABLES = (TokenIndex, StringIndex, DateIndex, NumberIndex, QuantityIndex, ReferenceIndex, UriIndex)
# IndexRows attribute -> (table, columns copied from each row)
_ROW_KINDS = (
    ("tokens", TokenIndex, ("param", "system", "code", "text", "group")),
    ("strings", StringIndex, ("param", "norm", "exact", "group")),
    ("dates", DateIndex, ("param", "low", "high", "group")),
    ("numbers", NumberIndex, ("param", "value", "group")),
    ("quantities", QuantityIndex, ("param", "value", "system", "code", "unit", "canon_value", "canon_code", "group")),
    ("references", ReferenceIndex, ("param", "target_type", "target_id", "url", "group")),
    ("uris", UriIndex, ("param", "uri", "group")),
)
_MAX_TEXT = 1000  # btree-friendly bound for long strings; equality on longer values is rare


def _clip(value: object) -> object:
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT]
    return value


_DELETES = [sa.delete(t.__table__).where(t.__table__.c.res_pk == sa.bindparam("pk"))
            for t in (*INDEX_TABLES, CompartmentMembership)]


def replace(session: so.Session, res_pk: int, write: WriteRequest | None, *, fresh: bool = False) -> None:
    """Delete the resource's old index rows (unless it is new) and insert the new ones."""
    if not fresh:
        for stmt in _DELETES:
            session.execute(stmt, {"pk": res_pk})
    if write is None:
        return
    if write.rows is not None:
        for attr, table, columns in _ROW_KINDS:
            rows = getattr(write.rows, attr)
            if not rows:
                continue
            values = [
                {("grp" if c == "group" else c): _clip(getattr(r, c)) for c in columns} | {"res_pk": res_pk}
                for r in rows
            ]
            session.execute(sa.insert(table.__table__), values)
    if write.compartments:
        session.execute(
            sa.insert(CompartmentMembership.__table__),
            [{"res_pk": res_pk, "kind": kind, "owner_id": owner} for kind, owner in write.compartments],
        )
