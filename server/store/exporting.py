"""Streaming reads for Bulk Data export: stored bodies of one type, in pk order, a batch at a time.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

`stream_results` makes PostgreSQL use a server-side cursor (SQLite steps its cursor), so memory
stays flat however many resources a type has.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.fhir.search.query import SearchQuery
from server.store.index_models import CompartmentMembership
from server.store.models import ResourceRecord
from server.store.searching import where_clauses

R = ResourceRecord
BATCH = 1000


def present_types(session: so.Session) -> list[str]:
    """Resource types with at least one live resource."""
    return sorted(session.scalars(sa.select(R.type).where(R.deleted.is_(False)).distinct()))


def existing_ids(session: so.Session, type_: str, ids: Sequence[str]) -> set[str]:
    """Which of the ids exist (not deleted) as resources of the type."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        found.update(
            session.scalars(sa.select(R.id).where(R.type == type_, R.id.in_(chunk), R.deleted.is_(False)))
        )
    return found


def _patient_clause(type_: str, patients: Sequence[str] | None) -> Any:
    """Membership of the Patient compartment: of any patient (None) or of the listed ones."""
    c = CompartmentMembership
    members = sa.select(c.res_pk).where(c.kind == "Patient")
    if patients is not None:
        members = members.where(c.owner_id.in_(list(patients)))
    if type_ == "Patient":
        return sa.true() if patients is None else R.id.in_(list(patients))
    return R.pk.in_(members)


def stream_batches(
    session: so.Session,
    type_: str,
    *,
    until: datetime,
    since: datetime | None = None,
    patient_level: bool = False,
    patients: Sequence[str] | None = None,
    filters: Sequence[SearchQuery] = (),
    access: SearchQuery | None = None,
) -> Iterator[list[str]]:
    """Yield, BATCH rows at a time, the stored JSON of every live resource of the type matching the
    export's criteria, in pk order.

    `access` is the search the grant narrows the type to (restrict_query): its conditions are added.
    A Core statement on the session's connection with a server-side cursor (`stream_results`):
    no ORM row objects, and only one batch of bodies in memory at a time.
    """
    conds: list[Any] = [R.type == type_, R.deleted.is_(False), R.last_updated <= until, R.body.is_not(None)]
    if since is not None:
        conds.append(R.last_updated >= since)
    if patient_level:
        conds.append(_patient_clause(type_, patients))
    if filters:
        conds.append(sa.or_(*(sa.and_(*where_clauses(q)) for q in filters)))
    if access is not None:
        conds += where_clauses(access)
    stmt = sa.select(R.body).where(*conds).order_by(R.pk)
    result = session.connection().execution_options(stream_results=True, yield_per=BATCH).execute(stmt)
    try:
        for rows in result.scalars().partitions():
            yield list(rows)
    finally:
        result.close()


def stream_bodies(session: so.Session, type_: str, *, until: datetime, **criteria: Any) -> Iterator[str]:
    """The bodies of `stream_batches` one at a time."""
    for batch in stream_batches(session, type_, until=until, **criteria):
        yield from batch
