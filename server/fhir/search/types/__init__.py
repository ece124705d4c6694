"""Search parameter types in the FHIR layer: one module per type, registered in TYPES (see base.py)."""

from __future__ import annotations

from server.fhir.search.types import composite  # noqa: F401  (each module registers its type)
from server.fhir.search.types import date  # noqa: F401
from server.fhir.search.types import number  # noqa: F401
from server.fhir.search.types import quantity  # noqa: F401
from server.fhir.search.types import reference  # noqa: F401
from server.fhir.search.types import string  # noqa: F401
from server.fhir.search.types import token  # noqa: F401
from server.fhir.search.types import uri  # noqa: F401
from server.fhir.search.types.base import TYPES
from server.fhir.search.types.base import FhirType

__all__ = ["TYPES", "FhirType"]
