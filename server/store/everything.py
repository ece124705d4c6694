"""Patient/$everything query: the Patient compartment plus the resources its members reference.

https://hl7.org/fhir/R4B/patient-operation-everything.html

One SELECT per page over the union of (a) the Patient itself and every resource whose
`compartment` row names it and (b) the non-patient resources those members reference
(Practitioner, Organization, Location, Device, Medication, ...), keyset-paged by pk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.fhir.repository import HistoryPage
from server.fhir.repository import StoredResource
from server.store.index_models import CompartmentMembership
from server.store.index_models import ReferenceIndex
from server.store.models import ResourceRecord

R = ResourceRecord
# Resource types shared between patients that a record points at; other patients' data is
# never pulled in through a reference.
REFERENCED_TYPES = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Device",
    "Medication",
    "Substance",
    "HealthcareService",
    "Endpoint",
)


def _own_pk(patient_id: str) -> sa.Select[Any]:
    own = so.aliased(R)
    return sa.select(own.pk).where(own.type == "Patient", own.id == patient_id)


def _member_pks(patient_id: str) -> sa.Select[Any]:
    c = CompartmentMembership
    return sa.select(c.res_pk).where(c.kind == "Patient", c.owner_id == patient_id)


def _referenced_pks(patient_id: str) -> sa.Select[Any]:
    ref = ReferenceIndex
    target = so.aliased(R)
    # SQLite takes no parenthesised UNION inside UNION: the sources are an OR of two IN lists.
    source = sa.or_(ref.res_pk.in_(_member_pks(patient_id)), ref.res_pk.in_(_own_pk(patient_id)))
    return (
        sa.select(target.pk)
        .join(ref, sa.and_(ref.target_type == target.type, ref.target_id == target.id))
        .where(source, ref.target_type.in_(REFERENCED_TYPES))
    )


def _conditions(patient_id: str, since: datetime | None, types: Sequence[str]) -> list[Any]:
    parts = (_own_pk(patient_id), _member_pks(patient_id), _referenced_pks(patient_id))
    everything = sa.union(*parts).subquery()
    conds: list[Any] = [R.pk.in_(sa.select(everything.c[0])), R.deleted.is_(False)]
    if since is not None:
        conds.append(R.last_updated >= since)
    if types:
        conds.append(R.type.in_(list(types)))
    return conds


def everything(
    session: so.Session,
    patient_id: str,
    *,
    since: datetime | None,
    types: Sequence[str],
    count: int,
    cursor: int | None,
) -> HistoryPage:
    """Return one page (ascending pk) of the patient's record, the next cursor and the total."""
    conds = _conditions(patient_id, since, types)
    total = None
    if cursor is None:
        total = session.scalar(sa.select(sa.func.count()).select_from(R).where(*conds))
    if cursor is not None:
        conds.append(R.pk > cursor)
    cols = (R.pk, R.type, R.id, R.version, R.last_updated, R.deleted, R.body)
    rows = list(session.execute(sa.select(*cols).where(*conds).order_by(R.pk).limit(count + 1)))
    next_cursor = rows[count - 1].pk if len(rows) > count and count > 0 else None
    entries = [StoredResource(*row[1:]) for row in rows[:count]]
    return HistoryPage(entries, next_cursor, total)
