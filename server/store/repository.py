"""SqlRepository: versioned resources, history and index rows on SQLite or PostgreSQL.

Implements server.fhir.repository.FhirRepository. Writes lock the resource row
(SELECT ... FOR UPDATE on PostgreSQL; SQLite serialises writers with BEGIN IMMEDIATE), so
concurrent updates get versions 1..N without gaps and If-Match is checked under the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm as so

from server.errors import PreconditionFailedError
from server.errors import VersionConflictError
from server.fhir.repository import HistoryPage
from server.fhir.repository import StoredResource
from server.fhir.repository import WriteRequest
from server.store import indexes
from server.store.models import ResourceRecord
from server.store.models import ResourceVersion
from server.store.session import begin_write


def _now() -> datetime:
    # Millisecond precision: what the served meta.lastUpdated shows is what is stored.
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _stamp(resource: dict[str, Any], type_: str, id_: str, version: int, moment: datetime) -> str:
    """Set id, meta.versionId and meta.lastUpdated and serialise the body that will be served."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
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


class SqlRepository:
    """FhirRepository over one SQLAlchemy session (opened and closed by the caller)."""

    def __init__(self, session: so.Session) -> None:
        self.session = session
        self.is_postgres = session.get_bind().dialect.name == "postgresql"
        self._depth = 0

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
        if self.session.in_transaction():
            # A read left the session's implicit transaction open: end it, so the write
            # starts as a write (BEGIN IMMEDIATE on SQLite) and really commits below.
            self.session.rollback()
        begin_write(self.session)
        self._depth = 1
        try:
            yield
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise
        finally:
            self._depth = 0

    # -- reads ----------------------------------------------------------------------------

    def _current_row(self, type_: str, id_: str, *, lock: bool = False) -> ResourceRecord | None:
        stmt = sa.select(ResourceRecord).where(ResourceRecord.type == type_, ResourceRecord.id == id_)
        if lock:
            stmt = stmt.execution_options(populate_existing=True)
            if self.is_postgres:
                stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

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
        row = self.session.execute(
            sa.select(
                ResourceRecord.type,
                ResourceRecord.id,
                ResourceRecord.version,
                ResourceRecord.last_updated,
                ResourceRecord.deleted,
                ResourceRecord.body,
            ).where(ResourceRecord.type == type_, ResourceRecord.id == id_)
        ).one_or_none()
        return None if row is None else StoredResource(*row)

    def read_version(self, type_: str, id_: str, version: int) -> StoredResource | None:
        """Return one version of a resource, or None."""
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
        stmt = sa.select(ResourceRecord).where(ResourceRecord.deleted.is_(False))
        if type_:
            stmt = stmt.where(ResourceRecord.type == type_)
        for row in self.session.scalars(stmt.order_by(ResourceRecord.pk).execution_options(yield_per=500)):
            yield _stored(row)

    # -- writes ---------------------------------------------------------------------------

    def _write_version(
        self, record: ResourceRecord, write: WriteRequest | None, method: str
    ) -> StoredResource:
        moment = _now()
        if record.last_updated is not None and moment <= record.last_updated:
            moment = record.last_updated  # clocks of several workers: never go backwards
        record.last_updated = moment
        if write is None:
            record.deleted, record.body = True, None
        else:
            record.deleted = False
            record.body = _stamp(write.resource, record.type, record.id, record.version, moment)
        self.session.add(record)
        self.session.flush()
        self.session.add(
            ResourceVersion(
                res_pk=record.pk,
                type=record.type,
                id=record.id,
                version=record.version,
                last_updated=moment,
                method=method,
                deleted=record.deleted,
                body=record.body,
            )
        )
        indexes.replace(self.session, record.pk, write)
        self.session.flush()
        return _stored(record, method)

    def create_resource(self, type_: str, write: WriteRequest, id_: str) -> StoredResource:
        """Store version 1 of a new resource with the given id."""
        record = ResourceRecord(type=type_, id=id_, version=1, last_updated=None)
        try:
            with self.session.begin_nested():
                return self._write_version(record, write, "POST")
        except sa_exc.IntegrityError:
            raise VersionConflictError(f"{type_}/{id_} already exists") from None

    def update_resource(
        self, type_: str, id_: str, write: WriteRequest, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Store the next version (or version 1 with this id); return it and whether created."""
        record = self._current_row(type_, id_, lock=True)
        if record is None:
            if if_match is not None:
                raise PreconditionFailedError(
                    f"If-Match {if_match} given but {type_}/{id_} does not exist"
                )
            record = ResourceRecord(type=type_, id=id_, version=1, last_updated=None)
            try:
                with self.session.begin_nested():
                    return self._write_version(record, write, "PUT"), True
            except sa_exc.IntegrityError:
                # A concurrent writer created it first: continue as an update of theirs.
                record = self._current_row(type_, id_, lock=True)
                if record is None:
                    raise VersionConflictError(f"Concurrent create of {type_}/{id_}") from None
        if if_match is not None and if_match != record.version:
            raise PreconditionFailedError(
                f"If-Match version {if_match} does not match the current version {record.version}"
                f" of {type_}/{id_}",
                message_id="MSG_VERSION_CONFLICT",
            )
        created = record.deleted
        record.version += 1
        return self._write_version(record, write, "PUT"), created

    def delete_resource(
        self, type_: str, id_: str, if_match: int | None = None
    ) -> StoredResource | None:
        """Write a tombstone version; None if the resource never existed."""
        record = self._current_row(type_, id_, lock=True)
        if record is None:
            return None
        if if_match is not None and if_match != record.version:
            raise PreconditionFailedError(
                f"If-Match version {if_match} does not match the current version {record.version}"
            )
        if record.deleted:
            return _stored(record)
        record.version += 1
        return self._write_version(record, None, "DELETE")

    # -- search -----------------------------------------------------------------------------

    def search(self, query: Any) -> Any:
        """Run a SearchQuery (see server.store.searching)."""
        from server.store.searching import search

        return search(self.session, query)

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
