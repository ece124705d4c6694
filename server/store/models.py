"""Resource storage: the current version, every version, and the conditional-create guard.

`body` is the exact JSON served (meta.versionId / meta.lastUpdated already set), so a read
returns stored text without building a model.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base

# BigInteger primary keys autoincrement on SQLite only as INTEGER.
BigIntPk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class ResourceRecord(Base):
    """The current version of one resource (a tombstone when deleted)."""

    __tablename__ = "resource"
    __table_args__ = (
        sa.UniqueConstraint("type", "id", name="uq_resource_type_id"),
        sa.Index("ix_resource_type_last_updated", "type", "last_updated"),
    )

    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    type: so.Mapped[str] = so.mapped_column(sa.String(64))
    id: so.Mapped[str] = so.mapped_column(sa.String(64))
    version: so.Mapped[int] = so.mapped_column(sa.Integer)
    last_updated: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    deleted: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False)
    body: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)


class ResourceVersion(Base):
    """Every version of every resource, deletes included as tombstones (body NULL)."""

    __tablename__ = "resource_version"
    __table_args__ = (
        sa.UniqueConstraint("res_pk", "version", name="uq_resource_version_res_pk_version"),
        sa.Index("ix_resource_version_last_updated", "last_updated"),
        sa.Index("ix_resource_version_type_last_updated", "type", "last_updated"),
    )

    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    res_pk: so.Mapped[int] = so.mapped_column(sa.BigInteger, sa.ForeignKey("resource.pk", ondelete="CASCADE"))
    type: so.Mapped[str] = so.mapped_column(sa.String(64))
    id: so.Mapped[str] = so.mapped_column(sa.String(64))
    version: so.Mapped[int] = so.mapped_column(sa.Integer)
    last_updated: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    method: so.Mapped[str] = so.mapped_column(sa.String(8))
    deleted: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False)
    body: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)


class ConditionalGuard(Base):
    """One row per (type, normalised If-None-Exist criteria) so two creates cannot both win."""

    __tablename__ = "conditional_guard"

    key: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    res_pk: so.Mapped[int] = so.mapped_column(sa.BigInteger, sa.ForeignKey("resource.pk", ondelete="CASCADE"))
