"""composite search parameters: value$value… over the components' types.

Parsing a composite value is server.fhir.search.params (each component with its own type's
parse), indexing it is server.fhir.search.indexer (each component's rows under `name$i`
sharing a group); it is not matched in memory. https://hl7.org/fhir/R4B/search.html#composite
"""

from __future__ import annotations

from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register

COMPOSITE = register(FhirType("composite", frozenset({"missing"}), sortable=False))
