"""Audit tables: the append-only event chain (HMAC links) and its signed heads.

They sit on server.store.base.Base so one Alembic history migrates them, but nothing in the
clinical store joins them: to move them to their own database, point a second engine at them
(see README.md, "Own database"). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base

BigIntPk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class AuditRecord(Base):
    """One AuditEvent: searchable columns, the served JSON, and its link in the hash chain."""

    __tablename__ = "audit_event"
    __table_args__ = (
        sa.Index("ix_audit_event_recorded", "recorded"),
        sa.Index("ix_audit_event_patient_recorded", "patient", "recorded"),
        sa.Index("ix_audit_event_actor_recorded", "actor", "recorded"),
        sa.Index("ix_audit_event_resource", "resource"),
    )

    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    recorded: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    actor: so.Mapped[str | None] = so.mapped_column(sa.String(256), nullable=True)
    client: so.Mapped[str | None] = so.mapped_column(sa.String(256), nullable=True)
    patient: so.Mapped[str | None] = so.mapped_column(sa.String(128), nullable=True)
    action: so.Mapped[str] = so.mapped_column(sa.String(1))
    outcome: so.Mapped[int] = so.mapped_column(sa.Integer)
    type: so.Mapped[str] = so.mapped_column(sa.String(64))
    subtype: so.Mapped[str] = so.mapped_column(sa.String(64))
    resource: so.Mapped[str | None] = so.mapped_column(sa.String(256), nullable=True)
    query: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    prev_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    body: so.Mapped[str] = so.mapped_column(sa.Text)
    # Id of the key whose HMAC links this record (None: an unkeyed SHA-256 link from before b002).
    key_id: so.Mapped[str | None] = so.mapped_column(sa.String(32), nullable=True)


class AuditCheckpoint(Base):
    """A signed chain head, one per audit commit: (event_pk, head_hash, created, key_id) under HMAC-SHA256.

    The same head goes to the witness file outside the database (server/audit/witness.py).
    """

    __tablename__ = "audit_checkpoint"
    __table_args__ = (sa.Index("ix_audit_checkpoint_event_pk", "event_pk"),)

    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    created: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    event_pk: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    head_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    signature: so.Mapped[str] = so.mapped_column(sa.String(64))
    key_id: so.Mapped[str | None] = so.mapped_column(sa.String(32), nullable=True)  # None: before b002


class AuditPending(Base):
    """A clinical write's records, committed with the write, waiting to be linked into the chain.

    PostgreSQL only (chain.py, "Writes"): the write's transaction inserts one row here instead of
    taking the chain lock; the request's group commit links the records right after the commit and
    deletes the row in the same transaction; a row left by a crash is linked by the head timer.
    `pk` is random (chosen by the server) and `mac` is an HMAC under the audit key of (pk, created,
    records), so a row added or changed by someone without the key is never linked.
    """

    __tablename__ = "audit_pending"

    pk: so.Mapped[int] = so.mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    created: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    records: so.Mapped[str] = so.mapped_column(sa.Text)
    mac: so.Mapped[str] = so.mapped_column(sa.String(64))
    key_id: so.Mapped[str] = so.mapped_column(sa.String(32))
