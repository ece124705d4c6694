"""SqlRepository: versioned resources, history and index rows on SQLite or PostgreSQL.

Implements server.fhir.repository.FhirRepository. Writes lock the resource row
(SELECT ... FOR UPDATE on PostgreSQL; SQLite serialises writers with BEGIN IMMEDIATE), so
concurrent updates get versions 1..N without gaps and If-Match is checked under the lock.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm as so

from server.errors import InvalidRequestError
from server.errors import MultipleMatchesError
from server.errors import PreconditionFailedError
from server.errors import VersionConflictError
from server.fhir.repository import ConditionalCreate
from server.fhir.repository import HistoryPage
from server.fhir.repository import StoredResource
from server.fhir.repository import WriteRequest
from server.fhir.search.query import Match
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SearchResult
from server.store import indexes
from server.store import searching
from server.store.index_models import ReferenceIndex
from server.store.models import ConditionalGuard
from server.store.models import ResourceRecord
from server.store.models import ResourceVersion
from server.store.session import start_write

if TYPE_CHECKING:
    from server.fhir.operations.export import ExportRequest

_R = ResourceRecord.__table__
_V = ResourceVersion.__table__
# engine -> keys taken from its sequence, not yet used (weak: a disposed engine takes its pool along)
_PK_POOLS: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
_PK_LOCK = threading.Lock()
_PK_BLOCK = sa.text("SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, 64)")
# Largest values of the key (BIGINT) and version (INTEGER) columns: larger ones cannot be bound.
_KEY_MAX = 2**63 - 1
_VERSION_MAX = 2**31 - 1
# Built once: a read by id is the hottest statement.
_READ = sa.select(_R.c.type, _R.c.id, _R.c.version, _R.c.last_updated, _R.c.deleted, _R.c.body).where(
    _R.c.type == sa.bindparam("type"), _R.c.id == sa.bindparam("id")
)

# Called with (repository, stored version) for every version written, inside its transaction:
# topic-based subscriptions number their events here (server.subscriptions.outbox). Inside a
# transaction() block they run at its end, after the last write and before the final flush and
# commit; WRITE_PREFETCH first gets the whole list, so that what the observers will read can be
# queued (queue_query) to go out with the transaction's rows in one round trip.
WRITE_OBSERVERS: list[Callable[[SqlRepository, StoredResource], None]] = []
WRITE_PREFETCH: list[Callable[[SqlRepository, list[StoredResource]], None]] = []


def _now() -> datetime:
    # Millisecond precision: what the served meta.lastUpdated shows is what is stored.
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _stamp(resource: dict[str, Any], type_: str, id_: str, version: int, moment: datetime) -> str:
    """Set id, meta.versionId and meta.lastUpdated and serialise the body that will be served."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"resourceType": type_, "id": id_, "meta": meta}
    body.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
    return orjson.dumps(body).decode()


def _stored(row: ResourceRecord | ResourceVersion, method: str = "PUT") -> StoredResource:
    return StoredResource(
        type=row.type,
        id=row.id,
        version=row.version,
        last_updated=row.last_updated,
        deleted=row.deleted,
        body=row.body,
        method=getattr(row, "method", method),
    )


def _check_cursor(cursor: int | None) -> None:
    """A paging cursor is a row key: one the key column cannot hold was not made here (400, not 500)."""
    if cursor is not None and not 0 <= cursor <= _KEY_MAX:
        raise InvalidRequestError(
            f"Invalid paging cursor {cursor}", expression=("_cursor",), message_id="MSG_PARAM_INVALID"
        )


def forget_reserved_keys() -> None:
    """Drop the resource keys this process took from the sequence (needed after a sequence restart)."""
    with _PK_LOCK:
        _PK_POOLS.clear()


class SqlRepository:
    """FhirRepository over one SQLAlchemy session (opened and closed by the caller)."""

    def __init__(self, session: so.Session) -> None:
        self.session = session
        self.is_postgres = session.get_bind().dialect.name == "postgresql"
        self._depth = 0
        self._pending = indexes.PendingRows()
        self._written: list[StoredResource] = []  # versions the observers have not seen yet
        # Called at the end of the outermost transaction() block, inside it, before the commit
        # (the audit trail appends its records here); `after_rollback` when the block fails.
        self.before_commit: list[Callable[[], None]] = []
        self.after_rollback: list[Callable[[], None]] = []

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one write transaction; nested blocks join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # A read may have left the session's implicit transaction open: start_write ends it on
        # SQLite (so the write begins with BEGIN IMMEDIATE) and carries it on on PostgreSQL.
        start_write(self.session)
        self._depth = 1
        try:
            yield
            # Hooks last, then every queued row in one flush (the audit's own rows go out with the
            # write's on PostgreSQL: one pipelined round trip before the commit).
            for hook in self.before_commit:
                hook()
            self._observe_written()
            self.flush()
            self.session.commit()
        except BaseException:
            self._pending.clear()
            self._written.clear()
            self.session.rollback()
            for hook in self.after_rollback:
                hook()
            raise
        finally:
            self._depth = 0

    def _observe_written(self) -> None:
        """Show the observers every version this transaction wrote, in order (their reads prefetched)."""
        while self._written:
            written, self._written = self._written, []
            for prefetch in WRITE_PREFETCH:
                prefetch(self, written)
            self.flush()  # the queued rows, and the prefetched reads, in one round trip
            for stored in written:
                for observe in WRITE_OBSERVERS:
                    observe(self, stored)

    def queue_query(self, sql: str, params: tuple[Any, ...], done: Callable[[list[Any]], None]) -> None:
        """PostgreSQL: run a read in the next flush's pipeline, after the rows; `done` gets its rows."""
        self._pending.queries.append((sql, params, done))

    def queue_rows(self, table: sa.Table, rows: list[dict[str, object]]) -> None:
        """Queue rows of a table for this transaction's next flush (at the latest, before its commit)."""
        self._pending.add(table, rows)

    def flush(self) -> None:
        """Send queued rows (before commit and before any query reads them)."""
        if not self._pending:
            return
        try:
            self._pending.flush(self.session)
        except sa_exc.IntegrityError as exc:
            raise VersionConflictError(f"Conflicting concurrent write: {exc.orig}") from None

    def _next_pk(self) -> int:
        """A resource primary key from the PostgreSQL sequence, fetched in blocks of 64 per process.

        nextval() is outside transactions, so a key taken and not used (a rollback) is a gap,
        never a duplicate; keys of concurrent writers need not be in commit order (they never
        were: the key orders rows, `last_updated` and the version tables order time).
        """
        with _PK_LOCK:
            pool = _PK_POOLS.setdefault(self.session.get_bind(), [])
            if pool:
                return pool.pop()
        rows = self.session.execute(_PK_BLOCK).scalars().all()
        first, *rest = sorted(rows)
        with _PK_LOCK:
            pool.extend(reversed(rest))
        return int(first)

    # -- reads ----------------------------------------------------------------------------

    def _current_row(self, type_: str, id_: str, *, lock: bool = False) -> sa.Row[Any] | None:
        self.flush()
        stmt = sa.select(_R.c.pk, _R.c.version, _R.c.last_updated, _R.c.deleted, _R.c.body).where(
            _R.c.type == type_, _R.c.id == id_
        )
        if lock and self.is_postgres:
            stmt = stmt.with_for_update()
        return self.session.execute(stmt).one_or_none()

    def lock_key(self, key: str) -> None:
        """Serialise transactions on a key (a conditional-create criteria hash) until commit.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: writers are serialised already.
        """
        if self.is_postgres:
            number = int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)
            self.session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": number})

    def lock(self, type_: str, id_: str) -> None:
        """Take the row lock of a resource for the rest of the transaction."""
        self._current_row(type_, id_, lock=True)

    def read_resource(self, type_: str, id_: str) -> StoredResource | None:
        """Return the current version (a tombstone if deleted), or None."""
        self.flush()
        row = self.session.execute(_READ, {"type": type_, "id": id_}).one_or_none()
        return None if row is None else StoredResource(*row)

    def read_version(self, type_: str, id_: str, version: int) -> StoredResource | None:
        """Return one version of a resource, or None (also for a number no version can have)."""
        if not 0 < version <= _VERSION_MAX:
            return None
        self.flush()
        row = self.session.scalars(
            sa.select(ResourceVersion).where(
                ResourceVersion.type == type_,
                ResourceVersion.id == id_,
                ResourceVersion.version == version,
            )
        ).one_or_none()
        return None if row is None else _stored(row)

    def iter_current(self, type_: str | None = None) -> Iterator[StoredResource]:
        """Yield every current, non-deleted resource, streaming in primary-key order."""
        self.flush()
        stmt = sa.select(ResourceRecord).where(ResourceRecord.deleted.is_(False))
        if type_:
            stmt = stmt.where(ResourceRecord.type == type_)
        for row in self.session.scalars(stmt.order_by(ResourceRecord.pk).execution_options(yield_per=500)):
            yield _stored(row)

    # -- writes ---------------------------------------------------------------------------
    # Core statements, not the ORM unit of work: a write is a handful of INSERTs and one
    # UPDATE, and the ORM's flush bookkeeping cost more than the SQL itself.

    def _finish_write(
        self,
        pk: int,
        type_: str,
        id_: str,
        version: int,
        moment: datetime,
        write: WriteRequest | None,
        method: str,
        body: str | None,
        *,
        fresh: bool,
    ) -> StoredResource:
        self._pending.add(
            _V,
            [
                {
                    "res_pk": pk,
                    "type": type_,
                    "id": id_,
                    "version": version,
                    "last_updated": moment,
                    "method": method,
                    "deleted": write is None,
                    "body": body,
                }
            ],
        )
        indexes.replace(self.session, pk, write, self._pending, fresh=fresh)
        stored = StoredResource(type_, id_, version, moment, write is None, body, method)
        if not WRITE_OBSERVERS:
            return stored
        if self._depth:
            self._written.append(stored)  # observed at the end of the transaction() block
        else:
            for observe in WRITE_OBSERVERS:
                observe(self, stored)
        return stored

    def _insert(
        self, type_: str, id_: str, write: WriteRequest, method: str, *, immediate: bool = False
    ) -> StoredResource:
        moment = _now()
        body = _stamp(write.resource, type_, id_, 1, moment)
        if self.is_postgres and not immediate:
            # Keys from the sequence let the resource row join the queued multi-row INSERTs:
            # a 100-entry transaction then needs a handful of round trips, not a hundred.
            pk = self._next_pk()
            self._pending.add(
                _R,
                [
                    {
                        "pk": pk,
                        "type": type_,
                        "id": id_,
                        "version": 1,
                        "last_updated": moment,
                        "deleted": False,
                        "body": body,
                    }
                ],
            )
            return self._finish_write(pk, type_, id_, 1, moment, write, method, body, fresh=True)
        pk = self.session.execute(
            sa.insert(_R)
            .values(type=type_, id=id_, version=1, last_updated=moment, deleted=False, body=body)
            .returning(_R.c.pk)
        ).scalar_one()
        return self._finish_write(pk, type_, id_, 1, moment, write, method, body, fresh=True)

    def _next_version(
        self, current: sa.Row[Any], type_: str, id_: str, write: WriteRequest | None, method: str
    ) -> StoredResource:
        version = current.version + 1
        # Several workers' clocks: lastUpdated never goes backwards for one resource.
        moment = max(_now(), current.last_updated)
        body = None if write is None else _stamp(write.resource, type_, id_, version, moment)
        self.session.execute(
            sa.update(_R)
            .where(_R.c.pk == current.pk)
            .values(version=version, last_updated=moment, deleted=write is None, body=body)
        )
        return self._finish_write(current.pk, type_, id_, version, moment, write, method, body, fresh=False)

    def create_resource(self, type_: str, write: WriteRequest, id_: str) -> StoredResource:
        """Store version 1 of a new resource with the given id."""
        try:
            return self._insert(type_, id_, write, "POST")
        except sa_exc.IntegrityError:
            raise VersionConflictError(f"{type_}/{id_} already exists") from None

    def update_resource(
        self, type_: str, id_: str, write: WriteRequest, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Store the next version (or version 1 with this id); return it and whether created."""
        current = self._current_row(type_, id_, lock=True)
        if current is None:
            if if_match is not None:
                raise PreconditionFailedError(f"If-Match {if_match} given but {type_}/{id_} does not exist")
            try:
                self.flush()
                with self.session.begin_nested():
                    return self._insert(type_, id_, write, "PUT", immediate=True), True
            except sa_exc.IntegrityError:
                # A concurrent writer created it first: continue as an update of theirs.
                current = self._current_row(type_, id_, lock=True)
                if current is None:
                    raise VersionConflictError(f"Concurrent create of {type_}/{id_}") from None
        if if_match is not None and if_match != current.version:
            raise PreconditionFailedError(
                f"If-Match version {if_match} does not match the current version {current.version}"
                f" of {type_}/{id_}",
                message_id="MSG_VERSION_CONFLICT",
            )
        return self._next_version(current, type_, id_, write, "PUT"), bool(current.deleted)

    def delete_resource(self, type_: str, id_: str, if_match: int | None = None) -> StoredResource | None:
        """Write a tombstone version; None if the resource never existed."""
        current = self._current_row(type_, id_, lock=True)
        if current is None:
            return None
        if if_match is not None and if_match != current.version:
            raise PreconditionFailedError(
                f"If-Match version {if_match} does not match the current version {current.version}"
            )
        if current.deleted:
            return StoredResource(type_, id_, current.version, current.last_updated, True, None, "DELETE")
        return self._next_version(current, type_, id_, None, "DELETE")

    def referrers(self, type_: str, id_: str, limit: int) -> list[tuple[str, str]]:
        """Return up to `limit` (type, id) of current resources with an indexed reference to this one."""
        self.flush()
        ref = ReferenceIndex.__table__
        stmt = (
            sa.select(_R.c.type, _R.c.id)
            .where(
                _R.c.pk.in_(
                    sa.select(ref.c.res_pk).where(ref.c.target_type == type_, ref.c.target_id == id_)
                ),
                _R.c.deleted.is_(False),
            )
            .order_by(_R.c.pk)
            .limit(limit)
        )
        return [(t, i) for t, i in self.session.execute(stmt)]

    # -- search -----------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a SearchQuery (see server.store.searching)."""
        self.flush()
        return searching.run(self.session, query)

    def conditional_create(
        self, op: ConditionalCreate
    ) -> tuple[StoredResource | None, StoredResource | None]:
        """Create under the guard key unless the criteria match: (the match, None) or (None, created).

        A concurrent create of the same criteria that claimed the guard first makes this one
        search again and return the winner.
        """
        self.flush()
        session = self.session
        for _attempt in range(3):
            found = _guard_matches(session, op)
            if len(found) > 1:
                raise MultipleMatchesError(
                    f"If-None-Exist criteria match {len(found)} or more {op.type} resources",
                    message_id="MSG_MULTIPLE_MATCHES",
                )
            if found:
                m = found[0]
                return StoredResource(m.type, m.id, m.version, m.last_updated, False, m.body), None
            try:
                with session.begin_nested():
                    writer = SqlRepository(session)
                    created = writer.create_resource(op.type, op.write, op.id)
                    writer.flush()  # its queued version and index rows belong in this savepoint
                    pk = session.scalar(sa.select(_R.c.pk).where(_R.c.type == op.type, _R.c.id == op.id))
                    _claim(session, op, pk)
                return None, created
            except (sa_exc.IntegrityError, _LostRaceError):
                # The guard row is held by a concurrent create of the same criteria: once it has
                # committed, searching again finds the winner.
                continue
        raise VersionConflictError(
            f"Concurrent conditional creates of {op.type}; retry", message_id="MSG_CONFLICT"
        )

    def everything(
        self, patient_id: str, *, since: datetime | None, types: Sequence[str], count: int, cursor: int | None
    ) -> HistoryPage:
        """Return a page of Patient/$everything (see server.store.everything)."""
        _check_cursor(cursor)
        self.flush()
        from server.store.everything import everything

        return everything(self.session, patient_id, since=since, types=types, count=count, cursor=cursor)

    def submit_export(self, request: ExportRequest) -> str:
        """Queue a Bulk Data export job (see server.store.jobs)."""
        from server.store.jobs import submit

        return submit(self.session, request)

    # -- history --------------------------------------------------------------------------

    def read_history(
        self,
        type_: str | None,
        id_: str | None,
        *,
        since: datetime | None,
        at: tuple[datetime, datetime] | None,
        count: int,
        cursor: int | None,
    ) -> HistoryPage:
        """Return versions newest first, filtered by time, keyset-paged by version pk."""
        _check_cursor(cursor)
        self.flush()
        v = ResourceVersion
        stmt = sa.select(v)
        if type_:
            stmt = stmt.where(v.type == type_)
        if id_:
            stmt = stmt.where(v.id == id_)
        if since is not None:
            stmt = stmt.where(v.last_updated >= since)
        if at is not None:
            # Versions current at some moment of [low, high): written before high and not
            # superseded before low.
            later = sa.orm.aliased(ResourceVersion)
            superseded = (
                sa.select(later.pk)
                .where(later.res_pk == v.res_pk, later.version == v.version + 1, later.last_updated < at[0])
                .exists()
            )
            stmt = stmt.where(v.last_updated < at[1], ~superseded)
        total = None
        if id_ and cursor is None:
            total = self.session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
        if cursor is not None:
            stmt = stmt.where(v.pk < cursor)
        rows = list(self.session.scalars(stmt.order_by(v.pk.desc()).limit(count + 1)))
        next_cursor = rows[count - 1].pk if len(rows) > count and count > 0 else None
        return HistoryPage([_stored(r) for r in rows[:count]], next_cursor, total)


# -- conditional create ---------------------------------------------------------------------


class _LostRaceError(Exception):
    """Another transaction took the conditional-create guard first."""


def _guard_matches(session: so.Session, op: ConditionalCreate) -> list[Match]:
    """The first two matches of conditional criteria the caller may see."""
    query = op.query
    limited = SearchQuery(types=query.types, tests=query.tests, compartment=query.compartment, count=2)
    found = searching.run(session, limited).matches
    return found if op.visible is None else op.visible(found)


def _claim(session: so.Session, op: ConditionalCreate, pk: int | None) -> None:
    g = ConditionalGuard
    old = session.scalar(sa.select(g.res_pk).where(g.key == op.key))
    if old is None:
        session.execute(sa.insert(g).values(key=op.key, res_pk=pk))
        return
    # The key is taken. A concurrent create may have committed since our search: if anything
    # but our own new resource matches now, we lost.
    if any(m.pk != pk for m in _guard_matches(session, op)):
        raise _LostRaceError(op.key)
    # Otherwise the guarded resource was deleted or no longer matches: take the guard over,
    # unless someone else just did.
    done = session.execute(sa.update(g).where(g.key == op.key, g.res_pk == old).values(res_pk=pk))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise _LostRaceError(op.key)
