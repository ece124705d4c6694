"""The group commit's appends on a database connection of their own, in the driver's SQL.

Every read, search and failure appends its records before the response leaves (batching.py
groups them). Through a Session such an append costs about a dozen SQLAlchemy calls and, on
PostgreSQL, six round trips (BEGIN, lock, head, records, head row, COMMIT) per group. Here one
connection per process, kept for the process's lifetime, runs the same transaction in the
driver's SQL: SQLite `BEGIN IMMEDIATE`, the head, one executemany, the head row, COMMIT;
PostgreSQL in two round trips of one simple-query message each (BEGIN + advisory lock + head +
the claim of pending writes; one multi-row INSERT of the records + the head row + COMMIT), the
values bound on the client (psycopg's ClientCursor quoting). That is about half the driver's
CPU of the same statements in pipeline mode (0.20 instead of 0.40 ms for a group of three,
bench/README.md) and a little less of the server's. The chain (chain.link_rows,
chain.sign_head) and the rows written are the same as on the Session path, and verify reads them
back through SQLAlchemy.

Clinical writes on SQLite do not come here: their records are linked in the write's own
transaction (the write lock serialises writers anyway). On PostgreSQL a write commits its records
unlinked in audit_pending (chain.py, "Writes") and comes here right after its commit: the group
links them and deletes the pending row in one transaction, so clinical commits do not queue on
the chain lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.audit import chain
from server.audit.events import AuditFacts
from server.audit.models import AuditCheckpoint
from server.audit.models import AuditPending
from server.audit.models import AuditRecord

# SQLite: this connection checkpoints the WAL once every so many groups instead of after every
# commit. With WAL and synchronous=NORMAL a commit does not fsync, but the automatic checkpoint
# that follows each commit once the WAL holds 1000 pages does (WAL and database file), and while
# other connections keep read transactions open the WAL never shrinks below that, so it ran after
# every group: most of a group's cost. A group writes about 7 pages; 64 groups, about 2 MB.
CHECKPOINT_EVERY = 64
_COLUMNS = tuple(c.name for c in AuditRecord.__table__.columns)
_HEAD_COLUMNS = ("created", "event_pk", "head_hash", "signature", "key_id")


def _insert(table: str, names: Sequence[str], mark: str) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join([mark] * len(names))})'


_HEAD_SQL = f'SELECT pk, hash FROM "{AuditRecord.__tablename__}" ORDER BY pk DESC LIMIT 1'
_CLAIM_SQL = f'DELETE FROM "{AuditPending.__tablename__}" WHERE pk = ANY(%s) RETURNING pk'
# PostgreSQL, first message: its results are BEGIN's, the lock's, the head, then the claim's.
_BEGIN_SQL = f"BEGIN; SELECT pg_advisory_xact_lock({chain.CHAIN_LOCK}); {_HEAD_SQL}"


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy's SQLite DateTime stores a naive datetime (so both paths read back alike)."""
    return moment.isoformat(sep=" ", timespec="microseconds")


class DirectAppender:
    """Append groups of records and their signed heads on one connection of this process."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        mark = "?" if self.sqlite else "%s"
        self._insert = _insert(AuditRecord.__tablename__, _COLUMNS, mark)
        self._insert_many, _, rest = self._insert.partition(" VALUES ")
        self._insert_many += " VALUES"
        self._values = rest  # "(%s, %s, …)": one row, bound on the client
        self._insert_head = _insert(AuditCheckpoint.__tablename__, _HEAD_COLUMNS, mark)
        self._fairy: Any = None  # the pool's wrapper of the driver connection
        self._pid = 0
        self._groups = 0
        self._committing = False  # COMMIT of the current group was sent
        self.ticket = 0  # the witness ticket of the last append (batching.py makes it durable)

    def append(
        self, facts: Sequence[AuditFacts | chain.Pending], keyring: chain.Keyring, witness: Any = None
    ) -> chain.Head | None:
        """Commit the records and their head, then write the head to the witness (not fsync'd).

        A chain.Pending item (PostgreSQL: a committed write's records) is linked only if its
        audit_pending row is still there, and that row is deleted in the same transaction, so
        each write's records are linked once whoever links them (the request, or the head timer
        after a crash). None when nothing was left to link.

        The kept PostgreSQL connection may have been lost since the last group (a restarted or
        failed-over server, a terminated backend): when it fails before COMMIT was sent, nothing
        was written, so the group is appended once more on a new connection.
        """
        while True:
            kept = self._fairy is not None and self._pid == os.getpid()
            if not kept:
                self._fairy, self._pid = self.engine.raw_connection(), os.getpid()
                if self.sqlite:
                    self._fairy.dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
                else:  # each message says BEGIN … COMMIT itself (no implicit BEGIN round trip)
                    self._fairy.dbapi_connection.autocommit = True
            conn = self._fairy.dbapi_connection
            self._committing = False
            try:
                append = self._sqlite if self.sqlite else self._postgres
                head = append(conn, facts, keyring)
                break
            except BaseException as exc:
                self._discard(conn)
                lost = self._fairy is None and not self._committing  # dropped before COMMIT
                if not (kept and lost and not self.sqlite and isinstance(exc, Exception)):
                    raise
        if witness is not None and head is not None:
            self.ticket = witness.write(head)  # after the commit: the witness never leads the database
        return head

    def close(self) -> None:
        """Nothing to do: the connection is kept for the next group."""

    def _rows(self, facts: Sequence[Any], keyring: chain.Keyring, row: Any) -> list[dict[str, Any]]:
        head_pk, prev = (None, chain.GENESIS) if row is None else (row[0], row[1])
        return chain.link_rows(facts, keyring, head_pk, prev)

    def _sqlite(self, conn: Any, facts: Sequence[Any], keyring: chain.Keyring) -> chain.Head:
        if any(isinstance(f, chain.Pending) for f in facts):
            raise ValueError("pending write records are a PostgreSQL path (SQLite writes link in place)")
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")  # the chain lock: one writer at a time, until COMMIT
            rows = self._rows(facts, keyring, cur.execute(_HEAD_SQL).fetchone())
            for r in rows:
                r["recorded"] = _sqlite_time(r["recorded"])
            cur.executemany(self._insert, [tuple(r[c] for c in _COLUMNS) for r in rows])
            moment = chain.now()
            head = chain.sign_head(keyring, rows[-1]["pk"], rows[-1]["hash"], moment)
            cur.execute(self._insert_head, (_sqlite_time(moment), head.seq, head.link, head.sig, head.kid))
            cur.execute("COMMIT")
            self._groups += 1
            if self._groups % CHECKPOINT_EVERY == 0:
                cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            cur.close()
        return head

    def _postgres(self, conn: Any, facts: Sequence[Any], keyring: chain.Keyring) -> chain.Head | None:
        import psycopg

        pending = [f for f in facts if isinstance(f, chain.Pending)]
        cur = psycopg.ClientCursor(conn)
        try:
            # One message; the head is read after the lock is granted (a statement of its own, so
            # under READ COMMITTED it sees every append committed before). Pending writes are
            # claimed under the lock: only rows still there are linked (each exactly once).
            first = _BEGIN_SQL
            if pending:
                first += "; " + cur.mogrify(_CLAIM_SQL, ([p.pk for p in pending],))
            cur.execute(first)
            cur.nextset()  # the lock's
            cur.nextset()  # the head's
            head_row = cur.fetchone()
            claimed = {r[0] for r in cur.fetchall()} if pending and cur.nextset() else set()
            items: list[Any] = []
            for f in facts:
                if not isinstance(f, chain.Pending):
                    items.append(f)
                elif f.pk in claimed:
                    items.extend(f.records)
            if not items:  # every pending write was linked already (by the head timer)
                cur.execute("COMMIT")
                return None
            rows = self._rows(items, keyring, head_row)
            moment = chain.now()
            head = chain.sign_head(keyring, rows[-1]["pk"], rows[-1]["hash"], moment)
            values = ", ".join(cur.mogrify(self._values, tuple(r[c] for c in _COLUMNS)) for r in rows)
            checkpoint = cur.mogrify(self._insert_head, (moment, head.seq, head.link, head.sig, head.kid))
            self._committing = True  # from here a lost connection may have committed: no retry
            cur.execute(f"{self._insert_many} {values}; {checkpoint}; COMMIT")
        finally:
            cur.close()
        return head

    def _discard(self, conn: Any) -> None:
        """Roll back a failed append; a connection that cannot is dropped (the next group opens one)."""
        try:
            if self.sqlite:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            elif conn.closed or conn.broken:
                raise ConnectionError("audit connection lost")
            else:  # autocommit: the transaction the message began is ended by hand
                conn.execute("ROLLBACK")
        except Exception:
            with contextlib.suppress(Exception):
                self._fairy.invalidate()
            self._fairy = None
