"""Compile a SearchQuery into SQL over the resource and idx_* tables, and run it.

One SELECT for the page (keyset-paged when sorted by pk, _id or _lastUpdated, offset-paged
otherwise; `resource.pk` is always the last sort key), one COUNT when a total is wanted,
and one SELECT per _include / _revinclude and level. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BooleanClauseList

from server.fhir.search.query import AllTest
from server.fhir.search.query import ChainTest
from server.fhir.search.query import CompositeValue
from server.fhir.search.query import Cursor
from server.fhir.search.query import HasTest
from server.fhir.search.query import IdTest
from server.fhir.search.query import Include
from server.fhir.search.query import LastUpdatedTest
from server.fhir.search.query import Match
from server.fhir.search.query import MissingTest
from server.fhir.search.query import ParamTest
from server.fhir.search.query import PatientOnlyTest
from server.fhir.search.query import QuantityValue
from server.fhir.search.query import RangeValue
from server.fhir.search.query import ReferenceValue
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SearchResult
from server.fhir.search.query import SortKey
from server.fhir.search.query import Test
from server.fhir.search.query import TextValue
from server.fhir.search.query import TokenValue
from server.fhir.search.query import TypeTest
from server.fhir.search.query import UriValue
from server.fhir.search.query import Value
from server.store.index_models import CompartmentMembership
from server.store.index_models import DateIndex
from server.store.index_models import NumberIndex
from server.store.index_models import QuantityIndex
from server.store.index_models import ReferenceIndex
from server.store.index_models import StringIndex
from server.store.index_models import TokenIndex
from server.store.index_models import UriIndex
from server.store.models import ResourceRecord

R = ResourceRecord
Clause = sa.ColumnElement[bool]
TABLES: dict[str, Any] = {
    "token": TokenIndex,
    "string": StringIndex,
    "date": DateIndex,
    "number": NumberIndex,
    "quantity": QuantityIndex,
    "reference": ReferenceIndex,
    "uri": UriIndex,
}
_MAX_LEVELS = 4


# -- value conditions on one index table (alias) ------------------------------------------


def _number_cond(col: Any, v: RangeValue | QuantityValue, value: Any, low: Any, high: Any) -> Clause:
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


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """moment + delta, saturated at the ends of the datetime range (ap near year 1 or 9999)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def _date_cond(low: Any, high: Any, v: RangeValue) -> Clause:
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


def _point_cond(col: Any, v: RangeValue) -> Clause:
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


def _token_cond(t: Any, v: Value, modifier: str | None) -> Clause:
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


def _string_cond(s: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, TextValue)
    if modifier == "exact":
        return s.exact == v.text  # type: ignore[no-any-return]
    if modifier == "contains":
        return s.norm.contains(v.text, autoescape=True)  # type: ignore[no-any-return]
    return s.norm.startswith(v.text, autoescape=True)  # type: ignore[no-any-return]


def _date_value_cond(d: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, RangeValue)
    return _date_cond(d.low, d.high, v)


def _num_cond(n: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, RangeValue)
    return _number_cond(n.value, v, v.value, v.low, v.high)


def _quantity_cond(q: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, QuantityValue)
    if v.canon_code is not None and v.canon_value is not None:
        # Units convert: compare in UCUM base units (5 mg matches 0.005 g).
        return sa.and_(
            q.canon_code == v.canon_code,
            _number_cond(q.canon_value, v, v.canon_value, v.canon_low, v.canon_high),
        )
    conds = [_number_cond(q.value, v, v.value, v.low, v.high)]
    if v.system is not None:
        conds.append(q.system == v.system)
    if v.code is not None:
        conds.append(q.code == v.code if v.system is not None else sa.or_(q.code == v.code, q.unit == v.code))
    return sa.and_(*conds)


def _reference_cond(r: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, ReferenceValue)
    if v.id is None:
        return r.url == v.url  # type: ignore[no-any-return]
    local = r.target_id == v.id if v.type is None else sa.and_(r.target_type == v.type, r.target_id == v.id)
    return sa.or_(local, r.url == v.url) if v.url else local


def _uri_cond(u: Any, v: Value, modifier: str | None) -> Clause:
    assert isinstance(v, UriValue)
    if modifier == "below":
        return u.uri.startswith(v.uri, autoescape=True)  # type: ignore[no-any-return]
    if modifier == "above":
        prefixes = {v.uri}
        head = v.uri
        while "/" in head.rstrip("/"):
            head = head.rstrip("/").rpartition("/")[0]
            if head.endswith(":/") or head.endswith(":"):
                break
            prefixes.add(head)
        return u.uri.in_(sorted(prefixes))  # type: ignore[no-any-return]
    return u.uri == v.uri  # type: ignore[no-any-return]


_CONDS: dict[str, Callable[[Any, Value, str | None], Clause]] = {
    "token": _token_cond,
    "string": _string_cond,
    "date": _date_value_cond,
    "number": _num_cond,
    "quantity": _quantity_cond,
    "reference": _reference_cond,
    "uri": _uri_cond,
}


# -- tests --------------------------------------------------------------------------------


def _param_rows(test: ParamTest) -> sa.Select[Any]:
    """SELECT res_pk of the index rows matching any of the test's values."""
    if test.type == "composite":
        return _composite_rows(test)
    table = sa.orm.aliased(TABLES[test.type])
    cond = _CONDS[test.type]
    modifier = None if test.modifier == "not" else test.modifier
    conds = [cond(table, v, modifier) for v in test.values]
    if len(conds) == 1 and isinstance(conds[0], BooleanClauseList) and conds[0].operator is operators.or_:
        # One reference value: local target OR the URL as written. One SELECT per branch, so
        # each probes its own index: SQLite never splits an OR whose branches share the param
        # term, and PostgreSQL otherwise reads every row of the param (bench/README.md).
        branches = [sa.select(table.res_pk).where(table.param == test.param, c) for c in conds[0].clauses]
        return sa.select(sa.union_all(*branches).subquery().c[0])
    return sa.select(table.res_pk).where(table.param == test.param, sa.or_(*conds))


def _composite_rows(test: ParamTest) -> sa.Select[Any]:
    selects = []
    for value in test.values:
        assert isinstance(value, CompositeValue)
        aliases = [sa.orm.aliased(TABLES[ctype]) for ctype, _, _ in value.parts]
        first = aliases[0]
        conds: list[Clause] = []
        for i, ((ctype, _, part), alias) in enumerate(zip(value.parts, aliases, strict=False)):
            conds += [alias.param == f"{test.param}${i}", _CONDS[ctype](alias, part, None)]
            if i:
                conds += [alias.res_pk == first.res_pk, alias.grp == first.grp]
        selects.append(sa.select(first.res_pk).where(*conds))
    if len(selects) == 1:
        return selects[0]
    return sa.select(sa.union(*selects).subquery().c[0])


def test_clause(test: Test, res: Any) -> Clause:
    """Return the WHERE condition of one test on the resource alias `res`."""
    if isinstance(test, ParamTest):
        rows = _param_rows(test)
        return ~res.pk.in_(rows) if test.modifier == "not" else res.pk.in_(rows)
    if isinstance(test, MissingTest):
        table = TABLES.get(test.type, TokenIndex)
        present = res.pk.in_(sa.select(table.res_pk).where(table.param == test.param))
        return ~present if test.missing else present
    if isinstance(test, IdTest):
        return res.id.not_in(test.ids) if test.negate else res.id.in_(test.ids)
    if isinstance(test, LastUpdatedTest):
        return sa.or_(*(_point_cond(res.last_updated, v) for v in test.values))
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

_SORT_COLUMNS = {
    "token": ("code", "code"),
    "string": ("norm", "norm"),
    "date": ("low", "high"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "reference": ("target_id", "target_id"),
    "uri": ("uri", "uri"),
}


def _sort_expr(key: SortKey) -> Any:
    if key.param == "_id":
        return R.id
    if key.param == "_lastUpdated":
        return R.last_updated
    table = sa.orm.aliased(TABLES[key.type])
    column = getattr(table, _SORT_COLUMNS[key.type][1 if key.descending else 0])
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
