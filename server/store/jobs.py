"""Bulk Data export jobs: the `export_job` table and the statements that queue, claim and finish jobs.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

State lives here, so a job survives a server restart. Workers claim a job with
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite: BEGIN IMMEDIATE serialises the
claim) and keep a heartbeat; a job whose heartbeat stopped (its worker died) is claimed again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base
from server.store.models import ResourceVersion
from server.store.session import begin_write

if TYPE_CHECKING:
    from server.fhir.operations.export import ExportRequest

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"


class ExportJob(Base):
    """One $export request: what was asked, by whom, how far it got, and what it produced."""

    __tablename__ = "export_job"
    __table_args__ = (sa.Index("ix_export_job_status_created", "status", "created"),)

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16))
    level: so.Mapped[str] = so.mapped_column(sa.String(16))
    group_id: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    types: so.Mapped[str] = so.mapped_column(sa.Text)  # JSON list
    type_filters: so.Mapped[str] = so.mapped_column(sa.Text)  # JSON list of "Type?query"
    since: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    output_format: so.Mapped[str] = so.mapped_column(sa.String(64))
    request_url: so.Mapped[str] = so.mapped_column(sa.Text)
    base_url: so.Mapped[str] = so.mapped_column(sa.Text)
    client_id: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    # The kick-off token's scopes: the worker rebuilds its access from them (NULL: a job queued
    # before grants were recorded, which exports nothing).
    grant_scopes: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    patients: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)  # JSON ids; NULL: all
    created: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    transaction_time: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    finished: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    expires: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    claimed_by: so.Mapped[str | None] = so.mapped_column(sa.String(128), nullable=True)
    heartbeat: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    progress: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    output: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)  # JSON [{type, file, count}]
    errors: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)  # JSON [{type, file, count}]
    failure: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)


@dataclass(frozen=True, slots=True)
class JobView:
    """A detached snapshot of one job row."""

    id: str
    status: str
    level: str
    group_id: str | None
    types: list[str]
    type_filters: list[str]
    since: datetime | None
    output_format: str
    request_url: str
    base_url: str
    client_id: str | None
    grant_scopes: str | None
    patients: list[str] | None
    created: datetime
    transaction_time: datetime | None
    finished: datetime | None
    expires: datetime | None
    claimed_by: str | None
    progress: str | None
    output: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    failure: str | None


def now() -> datetime:
    """Naive UTC now with millisecond precision (what the resource table stores)."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _view(row: ExportJob) -> JobView:
    return JobView(
        id=row.id,
        status=row.status,
        level=row.level,
        group_id=row.group_id,
        types=orjson.loads(row.types),
        type_filters=orjson.loads(row.type_filters),
        since=row.since,
        output_format=row.output_format,
        request_url=row.request_url,
        base_url=row.base_url,
        client_id=row.client_id,
        grant_scopes=row.grant_scopes,
        patients=None if row.patients is None else orjson.loads(row.patients),
        created=row.created,
        transaction_time=row.transaction_time,
        finished=row.finished,
        expires=row.expires,
        claimed_by=row.claimed_by,
        progress=row.progress,
        output=orjson.loads(row.output or "[]"),
        errors=orjson.loads(row.errors or "[]"),
        failure=row.failure,
    )


def submit(session: so.Session, request: ExportRequest) -> str:
    """Insert a queued job for the request and commit; return its id."""
    job_id = str(uuid.uuid4())
    if session.in_transaction():
        session.rollback()  # end a leftover read so the insert commits on its own
    begin_write(session)
    session.add(
        ExportJob(
            id=job_id,
            status=QUEUED,
            level=request.level,
            group_id=request.group_id,
            types=orjson.dumps(list(request.types)).decode(),
            type_filters=orjson.dumps(list(request.type_filters)).decode(),
            since=request.since,
            output_format=request.output_format,
            request_url=request.request_url,
            base_url=request.base_url,
            client_id=request.client_id,
            grant_scopes=request.scopes,
            patients=None if request.patients is None else orjson.dumps(list(request.patients)).decode(),
            created=now(),
        )
    )
    session.commit()
    return job_id


def get(session: so.Session, job_id: str) -> JobView | None:
    """Return a snapshot of the job, or None."""
    row = session.get(ExportJob, job_id, populate_existing=True)
    return None if row is None else _view(row)


def claim(session: so.Session, worker: str, stale_after: timedelta) -> JobView | None:
    """Take the oldest queued job (or one whose worker stopped beating) for `worker`, and commit."""
    moment = now()
    j = ExportJob
    begin_write(session)
    stmt = (
        sa.select(j)
        .where(sa.or_(j.status == QUEUED, sa.and_(j.status == RUNNING, j.heartbeat < moment - stale_after)))
        .order_by(j.created)
        .limit(1)
        .with_for_update(skip_locked=True)  # SQLite renders no FOR UPDATE: BEGIN IMMEDIATE serialises
    )
    row = session.scalars(stmt).first()
    if row is None:
        session.rollback()
        return None
    # The snapshot instant: now, or the newest write if a clock (this host's or another
    # writer's) is behind it, so nothing already written falls after transactionTime.
    newest = session.scalar(sa.select(sa.func.max(ResourceVersion.last_updated)))
    row.status, row.claimed_by, row.heartbeat = RUNNING, worker, moment
    row.transaction_time = max(moment, newest) if newest is not None else moment
    row.progress, row.output, row.errors = "starting", None, None
    session.commit()
    return _view(row)


def _update(session: so.Session, job_id: str, worker: str | None, **values: Any) -> bool:
    j = ExportJob
    stmt = sa.update(j).where(j.id == job_id)
    if worker is not None:
        stmt = stmt.where(j.status == RUNNING, j.claimed_by == worker)
    if session.in_transaction():
        session.rollback()
    begin_write(session)
    done = session.execute(stmt.values(**values)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


def beat(session: so.Session, job_id: str, worker: str, progress: str) -> bool:
    """Record progress; False when the job is no longer this worker's (cancelled, deleted, reclaimed)."""
    return _update(session, job_id, worker, heartbeat=now(), progress=progress)


def complete(
    session: so.Session,
    job_id: str,
    worker: str,
    output: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    ttl: timedelta,
) -> bool:
    """Mark the job completed with its output and error files; they expire after `ttl`."""
    moment = now()
    return _update(
        session,
        job_id,
        worker,
        status=COMPLETED,
        finished=moment,
        expires=moment + ttl,
        output=orjson.dumps(output).decode(),
        errors=orjson.dumps(errors).decode(),
        progress="done",
    )


def fail(session: so.Session, job_id: str, worker: str, message: str, ttl: timedelta) -> bool:
    """Mark the job failed with a message."""
    moment = now()
    return _update(
        session, job_id, worker, status=FAILED, finished=moment, expires=moment + ttl, failure=message
    )


def cancel(session: so.Session, job_id: str) -> bool:
    """Mark a job cancelled; its files go at the next cleanup. False if there was no live job."""
    j = ExportJob
    if session.in_transaction():
        session.rollback()
    begin_write(session)
    done = session.execute(
        sa.update(j).where(j.id == job_id, j.status != CANCELLED).values(status=CANCELLED, expires=now())
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


def expired(session: so.Session, moment: datetime) -> list[str]:
    """Ids of finished or cancelled jobs whose files have expired."""
    j = ExportJob
    return list(session.scalars(sa.select(j.id).where(j.expires < moment, j.status != RUNNING)))


def forget(session: so.Session, job_ids: list[str]) -> None:
    """Delete job rows (after their files were removed)."""
    if not job_ids:
        return
    if session.in_transaction():
        session.rollback()
    begin_write(session)
    session.execute(sa.delete(ExportJob).where(ExportJob.id.in_(job_ids)))
    session.commit()
