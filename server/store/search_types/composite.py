"""composite search parameters: component rows of one element occurrence, in their types' tables.

A composite has no table of its own: the indexer writes each component as a row of the
component's type under the parameter name `<name>$<i>`, all with the same `grp`.
https://hl7.org/fhir/R4B/search.html#composite
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from server.fhir.search.query import CompositeValue
from server.fhir.search.query import ParamTest
from server.store.search_types.base import TYPES
from server.store.search_types.base import Clause


def rows(test: ParamTest) -> sa.Select[Any]:
    """SELECT res_pk of the resources with one occurrence matching every component of a value."""
    selects = []
    for value in test.values:
        assert isinstance(value, CompositeValue)
        parts = [(TYPES[ctype], part) for ctype, _, part in value.parts]
        aliases = [sa.orm.aliased(t.table) for t, _ in parts]
        first = aliases[0]
        conds: list[Clause] = []
        for i, ((sql_type, part), alias) in enumerate(zip(parts, aliases, strict=False)):
            conds += [alias.param == f"{test.param}${i}", sql_type.condition(alias, part, None)]
            if i:
                conds += [alias.res_pk == first.res_pk, alias.grp == first.grp]
        selects.append(sa.select(first.res_pk).where(*conds))
    if len(selects) == 1:
        return selects[0]
    return sa.select(sa.union(*selects).subquery().c[0])
