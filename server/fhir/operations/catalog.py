"""Import every operation module so each registers itself (one import line per operation)."""

from __future__ import annotations

from server.fhir.operations import audit_ops  # noqa: F401
from server.fhir.operations import document  # noqa: F401
from server.fhir.operations import everything  # noqa: F401
from server.fhir.operations import export  # noqa: F401
from server.fhir.operations import registry  # noqa: F401
from server.fhir.operations import terminology  # noqa: F401
from server.fhir.operations import validate  # noqa: F401
