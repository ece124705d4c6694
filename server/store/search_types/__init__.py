"""Search parameter types in the database: one module per type, registered in TYPES (see base.py)."""

from __future__ import annotations

from server.store.search_types import date  # noqa: F401  (each module registers its type)
from server.store.search_types import number  # noqa: F401
from server.store.search_types import quantity  # noqa: F401
from server.store.search_types import reference  # noqa: F401
from server.store.search_types import string  # noqa: F401
from server.store.search_types import token  # noqa: F401
from server.store.search_types import uri  # noqa: F401
from server.store.search_types.base import TYPES
from server.store.search_types.base import SqlType

__all__ = ["TYPES", "SqlType"]
