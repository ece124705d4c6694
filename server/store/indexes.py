"""Write a resource version's search index rows and compartment memberships.

Rows come from server.fhir.search.indexer (pure); here they become idx_* table rows in the
same transaction as the resource.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.index_models import CompartmentMembership
from server.store.search_types import TYPES

if TYPE_CHECKING:
    from server.fhir.repository import WriteRequest

INDEX_TABLES = tuple(t.table for t in TYPES.values())
_MAX_TEXT = 1000  # btree-friendly bound for long strings; equality on longer values is rare
# Ids of local targets are not cut: a cut one could equal another resource's id.
_UNCLIPPED = frozenset({"target_type", "target_id"})


def _fields(table: Any, columns: tuple[str, ...]) -> tuple[tuple[str, str, int | None], ...]:
    """(row field, column, longest string kept) of each column copied from a type's rows.

    The longest string is the column's length (a varchar(64) such as a quantity's code or unit,
    which PostgreSQL would refuse longer), else _MAX_TEXT.
    """
    out = []
    for field in columns:
        column = "grp" if field == "group" else field
        length = getattr(table.__table__.c[column].type, "length", None)
        out.append((field, column, None if column in _UNCLIPPED else min(length or _MAX_TEXT, _MAX_TEXT)))
    return tuple(out)


# IndexRows attribute -> (table, _fields of the columns copied from each row), one per type
# (server.store.search_types)
_ROW_KINDS = tuple((t.rows, t.table, _fields(t.table, t.columns)) for t in TYPES.values())


def _clip(value: object, limit: int | None) -> object:
    if limit is not None and isinstance(value, str) and len(value) > limit:
        return value[:limit]
    return value


_INDEXED = tuple(t.__table__ for t in (*INDEX_TABLES, CompartmentMembership))
_DELETES = [sa.delete(t).where(t.c.res_pk == sa.bindparam("pk")) for t in _INDEXED]
# PostgreSQL: the old index rows of every resource updated since the last flush, one statement a table.
_DELETE_SQL = [f'DELETE FROM "{t.name}" WHERE res_pk = ANY(%s)' for t in _INDEXED]


class PendingRows:
    """Rows written in the current transaction but not yet sent, one executemany per table.

    A transaction Bundle of 500 resources then costs one INSERT per resource row plus a few
    multi-row INSERTs, instead of eight round trips per resource.
    """

    def __init__(self) -> None:
        self.rows: dict[sa.Table, list[dict[str, object]]] = {}
        self.replaced: list[int] = []  # resources whose old index rows go before the queued rows (PostgreSQL)
        self.indexed: set[int] = set()  # resources with index rows in the queue (replace filters only theirs)
        # PostgreSQL reads sent after the rows in the same pipeline: (sql, params, gets the rows)
        self.queries: list[tuple[str, tuple[Any, ...], Callable[[list[Any]], None]]] = []

    def __bool__(self) -> bool:
        return bool(self.rows) or bool(self.replaced) or bool(self.queries)

    def add(self, table: sa.Table, values: list[dict[str, object]]) -> None:
        """Queue rows for a table."""
        self.rows.setdefault(table, []).extend(values)

    def replace(self, res_pk: int) -> None:
        """Queue the deletion of a resource's index rows, sent first at the next flush (PostgreSQL).

        Its index rows still queued (an earlier version written in this transaction) are dropped
        from the queue instead: the deletes go out before every queued INSERT.
        """
        if res_pk in self.indexed:  # not a scan of the whole queue per update (a bundle, a reindex batch)
            self.indexed.discard(res_pk)
            for table in _INDEXED:
                queued = self.rows.get(table)
                if queued:
                    self.rows[table] = [r for r in queued if r.get("res_pk") != res_pk]
        self.replaced.append(res_pk)

    def clear(self) -> None:
        """Forget everything queued (the transaction rolled back)."""
        self.rows.clear()
        self.indexed.clear()
        self.replaced.clear()
        self.queries.clear()

    def flush(self, session: so.Session) -> None:
        """Send every queued row.

        On PostgreSQL each table's rows go out as multi-row INSERTs (one statement per table
        and column set, not one per row) in one network round trip for all tables (the rows need
        no RETURNING): one message inside an open transaction, else a psycopg pipeline; a table
        with many rows (a bundle) by COPY.
        """
        # Parents first: resource rows, then versions, then index rows (foreign keys).
        order = {"resource": 0, "resource_version": 1}
        tables = [t for t in sorted(self.rows, key=lambda t: order.get(t.name, 2)) if self.rows[t]]
        conn = session.connection()
        if conn.dialect.name == "postgresql" and (tables or self.replaced or self.queries):
            import psycopg
            from psycopg.rows import namedtuple_row

            raw = conn.connection.driver_connection
            replaced, self.replaced = self.replaced, []
            queries, self.queries = self.queries, []
            readers = []
            # A bundle's thousands of rows go by COPY (about 30x less CPU than a multi-row INSERT of
            # the same rows, whose text psycopg and PostgreSQL both parse), which cannot join a
            # pipeline; a single write's few rows go in one pipelined round trip.
            bulk = any(len(self.rows[t]) >= _COPY_MIN for t in tables)
            begun = raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # type: ignore[union-attr]
            try:
                if begun and not bulk:
                    # The transaction is open (a create's reference check, an update's read): every
                    # statement in one simple-query message, values bound on the client: about half
                    # the driver's CPU of the same statements pipelined (bench/README.md). A pipeline
                    # otherwise (it also carries the BEGIN psycopg sends first).
                    _send_one_message(raw, replaced, tables, self.rows, queries)
                    queries = []
                else:
                    with contextlib.nullcontext() if bulk else raw.pipeline(), raw.cursor() as cur:  # type: ignore[union-attr]
                        for sql in _DELETE_SQL if replaced else ():
                            cur.execute(sql, (replaced,))
                        for table in tables:
                            for columns, rows in _by_columns(self.rows[table]).items():
                                if len(rows) >= _COPY_MIN:
                                    _copy_rows(cur, table, columns, rows)
                                else:
                                    _insert_rows(cur, table, columns, rows)
                        for sql, params, done in queries:
                            reader = raw.cursor(row_factory=namedtuple_row)  # type: ignore[union-attr]
                            reader.execute(sql, params)
                            readers.append((reader, done))
            except psycopg.IntegrityError as exc:  # as SQLAlchemy would have raised it
                self.clear()
                raise sa.exc.IntegrityError("INSERT (pipeline)", None, exc) from exc
            for reader, done in readers:
                with reader:
                    done(reader.fetchall())
        else:
            if self.queries:
                self.queries.clear()
                raise RuntimeError("queued reads go in a PostgreSQL pipeline; SQLite reads directly")
            for table in tables:
                session.execute(sa.insert(table), self.rows[table])
        self.rows.clear()
        self.indexed.clear()


_SQL: dict[tuple[str, tuple[str, ...], int], str] = {}
_SQL_CACHED_ROWS = 64  # statements for up to this many rows are kept (a bundle's larger ones are not)
_MAX_PARAMS = 30_000  # bind parameters per statement (PostgreSQL allows 65 535)


def _send_one_message(
    raw: Any,
    replaced: list[int],
    tables: list[sa.Table],
    rows: dict[sa.Table, list[dict[str, object]]],
    queries: list[tuple[str, Any, Any]],
) -> None:
    """The deletes, inserts and queued reads of a flush as one message; each read gets its rows."""
    import psycopg
    from psycopg.rows import namedtuple_row

    cur = psycopg.ClientCursor(raw, row_factory=namedtuple_row)
    try:
        parts = [cur.mogrify(sql, (replaced,)) for sql in _DELETE_SQL] if replaced else []
        for table in tables:
            for columns, group in _by_columns(rows[table]).items():
                per = max(1, _MAX_PARAMS // len(columns))
                for start in range(0, len(group), per):
                    chunk = group[start : start + per]
                    parts.append(
                        cur.mogrify(
                            _insert_sql(table, columns, len(chunk)), [r[c] for r in chunk for c in columns]
                        )
                    )
        reads = len(parts)
        parts += [cur.mogrify(sql, params) for sql, params, _ in queries]
        cur.execute("; ".join(parts))
        for i in range(len(parts)):
            if i >= reads:
                queries[i - reads][2](cur.fetchall())
            if i + 1 < len(parts):
                cur.nextset()
    finally:
        cur.close()


def _by_columns(rows: list[dict[str, object]]) -> dict[tuple[str, ...], list[dict[str, object]]]:
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


_COPY_MIN = 64  # a table's rows in one flush from which they go by COPY (PostgreSQL)


def _copy_rows(cur: Any, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    """Send `rows` with COPY ... FROM STDIN (outside a pipeline)."""
    names = ", ".join(f'"{c}"' for c in columns)
    with cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def _insert_rows(cur: Any, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    """Queue `rows` on a pipelined psycopg cursor as few multi-row INSERTs."""
    per = max(1, _MAX_PARAMS // len(columns))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        cur.execute(_insert_sql(table, columns, len(chunk)), [row[c] for row in chunk for c in columns])


def _insert_sql(table: sa.Table, columns: tuple[str, ...], n: int) -> str:
    """`INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s)…` for psycopg, n rows, cached for small n."""
    key = (table.name, columns, n)
    sql = _SQL.get(key)
    if sql is None:
        names = ", ".join(f'"{c}"' for c in columns)
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        sql = f'INSERT INTO "{table.name}" ({names}) VALUES {", ".join([row] * n)}'
        if n <= _SQL_CACHED_ROWS:
            _SQL[key] = sql
    return sql


def replace(
    session: so.Session, res_pk: int, write: WriteRequest | None, pending: PendingRows, *, fresh: bool = False
) -> None:
    """Delete the resource's old index rows (unless it is new) and queue the new ones."""
    if not fresh and session.get_bind().dialect.name == "postgresql":
        pending.replace(res_pk)  # sent with the new rows, in the same pipeline, before them
    elif not fresh:
        pending.flush(session)  # queued rows of an earlier version in this transaction go first
        for stmt in _DELETES:
            session.execute(stmt, {"pk": res_pk})
    if write is None:
        return
    if write.rows is not None:
        for attr, table, fields in _ROW_KINDS:
            rows = getattr(write.rows, attr)
            if not rows:
                continue
            pending.add(
                table.__table__,
                [
                    {column: _clip(getattr(r, field), limit) for field, column, limit in fields}
                    | {"res_pk": res_pk}
                    for r in rows
                ],
            )
    if write.compartments:
        pending.add(
            CompartmentMembership.__table__,
            [{"res_pk": res_pk, "kind": kind, "owner_id": owner} for kind, owner in write.compartments],
        )
    pending.indexed.add(res_pk)
