"""Derive a write's search index rows and compartment memberships from the resource.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from typing import Any

from server.fhir.repository import WriteRequest
from server.fhir.search.indexer import compartments_of
from server.fhir.search.indexer import index_resource


def prepare(resource: dict[str, Any]) -> WriteRequest:
    """Return the WriteRequest for a validated resource, with its index rows."""
    return WriteRequest(
        resource=resource, rows=index_resource(resource), compartments=tuple(compartments_of(resource))
    )
