"""Compile a SearchQuery into SQL over the resource and idx_* tables, and run it.

One SELECT for the page (keyset-paged when sorted by pk, _id or _lastUpdated, offset-paged
otherwise; `resource.pk` is always the last sort key), one COUNT when a total is wanted,
and one SELECT per _include / _revinclude and level. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BooleanClauseList

from server.fhir.search.query import AllTest
from server.fhir.search.query import ChainTest
from server.fhir.search.query import Cursor
from server.fhir.search.query import HasTest
from server.fhir.search.query import IdTest
from server.fhir.search.query import Include
from server.fhir.search.query import LastUpdatedTest
from server.fhir.search.query import Match
from server.fhir.search.query import MissingTest
from server.fhir.search.query import ParamTest
from server.fhir.search.query import PatientOnlyTest
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SearchResult
from server.fhir.search.query import SortKey
from server.fhir.search.query import Test
from server.fhir.search.query import TypeTest
from server.store.index_models import CompartmentMembership
from server.store.index_models import ReferenceIndex
from server.store.models import ResourceRecord
from server.store.search_types import TYPES
from server.store.search_types import composite
from server.store.search_types.date import point_condition

R = ResourceRecord
Clause = sa.ColumnElement[bool]
_MAX_LEVELS = 4


# -- tests --------------------------------------------------------------------------------


def _param_rows(test: ParamTest) -> sa.Select[Any]:
    """SELECT res_pk of the index rows matching any of the test's values."""
    if test.type == "composite":
        return composite.rows(test)
    sql_type = TYPES[test.type]
    # The index table itself, not an alias (aliased() cost more than the rest of the statement):
    # each test is a self-contained subquery, never correlated with what encloses it.
    table = sql_type.table
    cond = sql_type.condition
    modifier = None if test.modifier == "not" else test.modifier
    conds = [cond(table, v, modifier) for v in test.values]
    if len(conds) == 1 and isinstance(conds[0], BooleanClauseList) and conds[0].operator is operators.or_:
        # One reference value: local target OR the URL as written. One SELECT per branch, so
        # each probes its own index: SQLite never splits an OR whose branches share the param
        # term, and PostgreSQL otherwise reads every row of the param (bench/README.md).
        own = sa.select(table.res_pk).correlate(None)
        branches = [own.where(table.param == test.param, c) for c in conds[0].clauses]
        return sa.select(sa.union_all(*branches).subquery().c[0]).correlate(None)
    return sa.select(table.res_pk).where(table.param == test.param, sa.or_(*conds)).correlate(None)


def test_clause(test: Test, res: Any) -> Clause:
    """Return the WHERE condition of one test on the resource alias `res`."""
    if isinstance(test, ParamTest):
        rows = _param_rows(test)
        return ~res.pk.in_(rows) if test.modifier == "not" else res.pk.in_(rows)
    if isinstance(test, MissingTest):
        table = (TYPES.get(test.type) or TYPES["token"]).table
        present = res.pk.in_(sa.select(table.res_pk).where(table.param == test.param))
        return ~present if test.missing else present
    if isinstance(test, IdTest):
        return res.id.not_in(test.ids) if test.negate else res.id.in_(test.ids)
    if isinstance(test, LastUpdatedTest):
        return sa.or_(*(point_condition(res.last_updated, v) for v in test.values))
    if isinstance(test, ChainTest):
        tgt = sa.orm.aliased(R)
        ref = sa.orm.aliased(ReferenceIndex)
        rows = (
            sa.select(ref.res_pk)
            .join(tgt, sa.and_(tgt.type == ref.target_type, tgt.id == ref.target_id))
            .where(ref.param == test.param, tgt.type.in_(test.targets), tgt.deleted.is_(False))
            .where(test_clause(test.inner, tgt))
        )
        return res.pk.in_(rows)  # type: ignore[no-any-return]
    if isinstance(test, HasTest):
        src = sa.orm.aliased(R)
        ref = sa.orm.aliased(ReferenceIndex)
        return (
            sa.select(ref.pk)
            .join(src, src.pk == ref.res_pk)
            .where(
                ref.param == test.param,
                ref.target_type == res.type,
                ref.target_id == res.id,
                src.type == test.source,
                src.deleted.is_(False),
                test_clause(test.inner, src),
            )
            .exists()
        )
    if isinstance(test, PatientOnlyTest):
        return _patient_only(test, res)
    if isinstance(test, TypeTest):
        return sa.or_(res.type != test.type, sa.and_(*(test_clause(t, res) for t in test.tests)))
    if isinstance(test, AllTest):
        return sa.and_(*(test_clause(t, res) for t in test.tests))
    raise TypeError(f"unknown search test {test!r}")


def _patient_only(test: PatientOnlyTest, res: Any) -> Clause:
    """Nothing that points to another patient; members in the patient's compartment (res_pk indexes)."""
    me = test.patient
    c, ref = sa.orm.aliased(CompartmentMembership), sa.orm.aliased(ReferenceIndex)
    other_member = sa.select(c.pk).where(c.res_pk == res.pk, c.kind == "Patient", c.owner_id != me)
    other_ref = sa.select(ref.pk).where(
        ref.res_pk == res.pk, ref.target_type == "Patient", ref.target_id != me
    )
    conds: list[Clause] = [
        ~other_member.exists(),
        ~other_ref.exists(),
        sa.or_(res.type != "Patient", res.id == me),
    ]
    if test.members:
        mine = sa.orm.aliased(CompartmentMembership)
        member = sa.select(mine.pk).where(mine.res_pk == res.pk, mine.kind == "Patient", mine.owner_id == me)
        conds.append(
            sa.or_(
                res.type.not_in(test.members), member.exists(), sa.and_(res.type == "Patient", res.id == me)
            )
        )
    return sa.and_(*conds)


def where_clauses(query: SearchQuery, res: Any = R) -> list[Clause]:
    """Return the conditions selecting the query's matches (deleted resources never match)."""
    conds: list[Clause] = [res.deleted.is_(False)]
    if len(query.types) == 1:
        conds.append(res.type == query.types[0])
    elif query.types:
        conds.append(res.type.in_(query.types))
    if query.compartment is not None:
        c, kind, owner = CompartmentMembership, query.compartment.kind, query.compartment.owner
        members = res.pk.in_(sa.select(c.res_pk).where(c.kind == kind, c.owner_id == owner))
        # The owner itself is in its compartment, whatever its stored memberships say.
        conds.append(sa.or_(members, sa.and_(res.type == kind, res.id == owner)))
    conds += [test_clause(t, res) for t in query.tests]
    return conds


# -- sorting and paging -------------------------------------------------------------------


def _sort_expr(key: SortKey) -> Any:
    if key.param == "_id":
        return R.id
    if key.param == "_lastUpdated":
        return R.last_updated
    sql_type = TYPES[key.type]
    table = sa.orm.aliased(sql_type.table)
    column = getattr(table, sql_type.sort[1 if key.descending else 0])
    agg = sa.func.max(column) if key.descending else sa.func.min(column)
    return sa.select(agg).where(table.res_pk == R.pk, table.param == key.param).scalar_subquery()


def _order(query: SearchQuery, backwards: bool) -> list[Any]:
    order = []
    for key in query.sort:
        expr = _sort_expr(key)
        descending = key.descending != backwards
        order.append(expr.desc().nulls_last() if descending else expr.asc().nulls_last())
    order.append(R.pk.desc() if backwards else R.pk.asc())
    return order


def _cursor_value(key: SortKey, value: Any) -> Any:
    if key.param == "_lastUpdated" and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


def _keyset_clause(query: SearchQuery, cursor: Cursor) -> Clause:
    """Rows strictly after (or, paging back, before) the cursor in the sort order."""
    pairs = zip(query.sort, cursor.values, strict=False)
    keys = [(_sort_expr(k), k.descending, _cursor_value(k, v)) for k, v in pairs]
    keys.append((R.pk, False, cursor.pk))
    ors = []
    for i, (expr, descending, value) in enumerate(keys):
        forward = descending == cursor.before
        step = expr > value if forward else expr < value
        ors.append(sa.and_(*(e == v for e, _, v in keys[:i]), step))
    return sa.or_(*ors)


def _page(session: so.Session, query: SearchQuery) -> tuple[list[Match], bool, bool]:
    cursor = query.cursor if query.keyset else None
    backwards = cursor is not None and cursor.before
    stmt = sa.select(R.pk, R.type, R.id, R.version, R.last_updated, R.body).where(*where_clauses(query))
    if cursor is not None:
        if len(cursor.values) != len(query.sort):
            from server.errors import InvalidRequestError

            raise InvalidRequestError("The paging cursor does not fit this _sort", expression=("_cursor",))
        stmt = stmt.where(_keyset_clause(query, cursor))
    stmt = stmt.order_by(*_order(query, backwards)).limit(query.count + 1)
    if cursor is None and query.offset:
        stmt = stmt.offset(query.offset)
    rows = session.execute(stmt).all()
    more = len(rows) > query.count
    rows = rows[: query.count]
    if backwards:
        rows.reverse()
    matches = [
        Match(r.pk, r.type, r.id, r.version, r.last_updated, r.body or "", _sort_values(query, r))
        for r in rows
    ]
    if backwards:
        return matches, True, more
    has_previous = cursor is not None or (query.cursor is None and query.offset > 0)
    return matches, more, has_previous


def _sort_values(query: SearchQuery, row: Any) -> tuple[Any, ...]:
    if not query.keyset:
        return ()
    return tuple(row.id if k.param == "_id" else row.last_updated.isoformat() for k in query.sort)


def _count(session: so.Session, query: SearchQuery) -> int:
    stmt = sa.select(sa.func.count()).select_from(R).where(*where_clauses(query))
    return int(session.scalar(stmt) or 0)


# -- _include / _revinclude ---------------------------------------------------------------


def _include_stmt(inc: Include, sources: list[Match]) -> sa.Select[Any] | None:
    tgt = sa.orm.aliased(R)
    ref = sa.orm.aliased(ReferenceIndex)
    cols = (tgt.pk, tgt.type, tgt.id, tgt.version, tgt.last_updated, tgt.body)
    if not inc.reverse:
        pks = [m.pk for m in sources if inc.source in ("*", m.type)]
        if not pks:
            return None
        stmt = (
            sa.select(*cols)
            .join(ref, sa.and_(tgt.type == ref.target_type, tgt.id == ref.target_id))
            .where(ref.res_pk.in_(pks))
        )
    else:
        by_type: dict[str, list[str]] = {}
        for m in sources:
            if inc.target in (None, m.type):
                by_type.setdefault(m.type, []).append(m.id)
        if not by_type:
            return None
        stmt = (
            sa.select(*cols)
            .join(ref, ref.res_pk == tgt.pk)
            .where(
                sa.or_(*(sa.and_(ref.target_type == t, ref.target_id.in_(ids)) for t, ids in by_type.items()))
            )
        )
        if inc.source != "*":
            stmt = stmt.where(tgt.type == inc.source)
    if inc.param != "*":
        stmt = stmt.where(ref.param == inc.param)
    if inc.target is not None and not inc.reverse:
        stmt = stmt.where(tgt.type == inc.target)
    return stmt.where(tgt.deleted.is_(False)).distinct().order_by(tgt.pk)


def _includes(session: so.Session, query: SearchQuery, matches: list[Match]) -> tuple[list[Match], list[str]]:
    seen = {m.pk for m in matches}
    included: list[Match] = []
    cut: list[str] = []
    level, sources = 0, matches
    while sources and level < _MAX_LEVELS:
        wanted = [i for i in query.includes if i.iterate or level == 0]
        found: list[Match] = []
        for inc in wanted:
            stmt = _include_stmt(inc, sources)
            if stmt is None:
                continue
            room = query.max_includes - len(included) - len(found)
            rows = session.execute(stmt.limit(room + len(seen) + 1)).all() if room > 0 else []
            fresh = [r for r in rows if r.pk not in seen]
            if len(fresh) > room:
                name = ("_revinclude" if inc.reverse else "_include") + f"={inc.source}:{inc.param}"
                cut.append(
                    f"{name}: more than {query.max_includes} resources to include; the rest were left out"
                )
                fresh = fresh[: max(room, 0)]
            for r in fresh:
                seen.add(r.pk)
                found.append(Match(r.pk, r.type, r.id, r.version, r.last_updated, r.body or ""))
        included += found
        sources = found
        level += 1
    return included, cut


# -- entry point --------------------------------------------------------------------------


def run(session: so.Session, query: SearchQuery) -> SearchResult:
    """Return the page of matches, included resources, total and paging flags."""
    only_total = query.summary == "count" or query.count == 0
    if only_total:
        matches, has_next, has_previous = [], False, False
    else:
        matches, has_next, has_previous = _page(session, query)
    total = None
    if query.total != "none":
        first_page = query.cursor is None and query.offset == 0
        if query.total is not None or only_total:
            total = _count(session, query)
        elif first_page and not has_next:
            total = len(matches)  # cheap: everything is on this page
    included, cut = _includes(session, query, matches) if query.includes and matches else ([], [])
    return SearchResult(matches, included, total, has_next, has_previous, cut)
