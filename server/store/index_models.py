"""Search index tables, one per parameter type, rewritten with each resource version.

Rows mirror server.fhir.search.indexer's row dataclasses field for field. `grp` ties the
component rows of one composite element occurrence together (NULL for plain rows).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base
from server.store.models import BigIntPk


def _res_fk() -> so.Mapped[int]:
    return so.mapped_column(sa.BigInteger, sa.ForeignKey("resource.pk", ondelete="CASCADE"))


class _IndexMixin:
    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    param: so.Mapped[str] = so.mapped_column(sa.String(100))
    grp: so.Mapped[int | None] = so.mapped_column(sa.Integer, nullable=True)


class TokenIndex(_IndexMixin, Base):
    """token parameters: system|code, plus display text for :text."""

    __tablename__ = "idx_token"
    __table_args__ = (
        sa.Index("ix_idx_token_param_code", "param", "code", "system"),
        sa.Index("ix_idx_token_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    system: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    code: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    text: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)


class StringIndex(_IndexMixin, Base):
    """string parameters: normalised (case- and accent-folded) and exact value."""

    __tablename__ = "idx_string"
    __table_args__ = (
        # text_pattern_ops: lets PostgreSQL use the index for prefix LIKE under any collation.
        sa.Index("ix_idx_string_param_norm", "param", "norm", postgresql_ops={"norm": "text_pattern_ops"}),
        sa.Index("ix_idx_string_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    norm: so.Mapped[str] = so.mapped_column(sa.Text)
    exact: so.Mapped[str] = so.mapped_column(sa.Text)


class DateIndex(_IndexMixin, Base):
    """date parameters as a half-open UTC range [low, high)."""

    __tablename__ = "idx_date"
    __table_args__ = (
        sa.Index("ix_idx_date_param_low", "param", "low", "high"),
        sa.Index("ix_idx_date_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    low: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    high: so.Mapped[datetime] = so.mapped_column(sa.DateTime)


class NumberIndex(_IndexMixin, Base):
    """number parameters."""

    __tablename__ = "idx_number"
    __table_args__ = (
        sa.Index("ix_idx_number_param_value", "param", "value"),
        sa.Index("ix_idx_number_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    value: so.Mapped[Decimal] = so.mapped_column(sa.Numeric(asdecimal=True))


class QuantityIndex(_IndexMixin, Base):
    """quantity parameters, with the UCUM canonical value where the unit converts."""

    __tablename__ = "idx_quantity"
    __table_args__ = (
        sa.Index("ix_idx_quantity_param_value", "param", "value"),
        sa.Index("ix_idx_quantity_param_canon", "param", "canon_code", "canon_value"),
        sa.Index("ix_idx_quantity_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    value: so.Mapped[Decimal] = so.mapped_column(sa.Numeric(asdecimal=True))
    system: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    code: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    unit: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    canon_value: so.Mapped[float | None] = so.mapped_column(sa.Float, nullable=True)
    canon_code: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)


class ReferenceIndex(_IndexMixin, Base):
    """reference parameters: local Type/id targets, or the URL of external ones."""

    __tablename__ = "idx_reference"
    __table_args__ = (
        sa.Index("ix_idx_reference_param_target", "param", "target_id", "target_type"),
        sa.Index("ix_idx_reference_target", "target_type", "target_id"),
        # The `OR url = ...` branch of a reference search (searching._reference_cond).
        sa.Index("ix_idx_reference_param_url", "param", "url"),
        sa.Index("ix_idx_reference_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    target_type: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    target_id: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    url: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)


class UriIndex(_IndexMixin, Base):
    """uri parameters."""

    __tablename__ = "idx_uri"
    __table_args__ = (
        sa.Index("ix_idx_uri_param_uri", "param", "uri", postgresql_ops={"uri": "text_pattern_ops"}),
        sa.Index("ix_idx_uri_res_pk", "res_pk"),
    )
    res_pk: so.Mapped[int] = _res_fk()
    uri: so.Mapped[str] = so.mapped_column(sa.Text)


class CompartmentMembership(Base):
    """Which Patient / Practitioner / Encounter / RelatedPerson / Device compartments a resource is in."""

    __tablename__ = "compartment"
    __table_args__ = (
        sa.Index("ix_compartment_kind_owner", "kind", "owner_id", "res_pk"),
        sa.Index("ix_compartment_res_pk", "res_pk"),
    )
    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    res_pk: so.Mapped[int] = _res_fk()
    kind: so.Mapped[str] = so.mapped_column(sa.String(32))
    owner_id: so.Mapped[str] = so.mapped_column(sa.String(64))
