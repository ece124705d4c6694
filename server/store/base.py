"""Declarative base with a naming convention so Alembic names every constraint the same way."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm as so

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(so.DeclarativeBase):
    """Base of every ORM class; its metadata is what Alembic migrates."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
