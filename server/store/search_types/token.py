"""token search parameters in idx_token (https://hl7.org/fhir/R4B/search.html#token)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import TextValue
from server.fhir.search.query import TokenValue
from server.fhir.search.query import Value
from server.store.index_models import TokenIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def condition(t: Any, v: Value, modifier: str | None) -> Clause:
    """system|code on an idx_token row, or (:text) a word of its display text."""
    if isinstance(v, TextValue):
        return sa.or_(
            t.text.startswith(v.text, autoescape=True), t.text.contains(" " + v.text, autoescape=True)
        )
    assert isinstance(v, TokenValue)
    conds = []
    if v.system is not None:
        conds.append(t.system.is_(None) if v.system == "" else t.system == v.system)
    if v.code is not None:
        conds.append(t.code == v.code)
    return sa.and_(*conds) if conds else sa.true()


TOKEN = register(
    SqlType(
        "token",
        TokenIndex,
        rows="tokens",
        columns=("param", "system", "code", "text", "group"),
        condition=condition,
        sort=("code", "code"),
    )
)
