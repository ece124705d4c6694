"""The storage contract the FHIR layer talks to; server.store implements it.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

if TYPE_CHECKING:
    from server.fhir.operations.export import ExportRequest
    from server.fhir.search.indexer import IndexRows
    from server.fhir.search.query import Match
    from server.fhir.search.query import SearchQuery
    from server.fhir.search.query import SearchResult


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One stored version: the served JSON text and its version metadata."""

    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    body: str | None
    method: str = "PUT"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """What a create or update stores: the validated resource and its derived index data.

    `interaction` is the one that asked for the write when the repository method does not say
    it ("patch" stores through update_resource); the audit trail records it. "": the method's own
    (create_resource: create, update_resource: update).
    """

    resource: dict[str, Any]
    rows: IndexRows | None = None
    compartments: Sequence[tuple[str, str]] = field(default_factory=tuple)
    interaction: str = ""


@dataclass(frozen=True, slots=True)
class ConditionalCreate:
    """A conditional create (If-None-Exist): store `write` as type/id unless `query` matches.

    `key` is the criteria's guard (see server.fhir.conditional.guard_key); `visible` keeps the
    matches the caller may see (None: all of them).
    """

    query: SearchQuery
    key: str
    type: str
    id: str
    write: WriteRequest
    visible: Callable[[list[Match]], list[Match]] | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of versions, newest first, with the cursor of the next page."""

    entries: list[StoredResource]
    next_cursor: int | None
    total: int | None = None


class FhirRepository(Protocol):
    """Versioned resource storage (Medplum's FhirRepository, HAPI's DAO).

    server.store.repository.SqlRepository implements it; tests/unit/test_repository_contract.py
    keeps the two signatures equal and this contract free of `Any`.
    """

    def read_resource(self, type_: str, id_: str) -> StoredResource | None:
        """Return the current version (a tombstone if deleted), or None."""

    def lock_key(self, key: str) -> None:
        """Serialise concurrent transactions on a key (e.g. conditional-create criteria) until commit."""

    def lock(self, type_: str, id_: str) -> None:
        """Take the row lock of a resource for the rest of the transaction (no-op if absent)."""

    def read_version(self, type_: str, id_: str, version: int) -> StoredResource | None:
        """Return one version of a resource, or None."""

    def create_resource(self, type_: str, write: WriteRequest, id_: str) -> StoredResource:
        """Store version 1 of a new resource with the given id."""

    def update_resource(
        self, type_: str, id_: str, write: WriteRequest, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Store the next version (or version 1 if absent); return it and whether it was created."""

    def delete_resource(self, type_: str, id_: str, if_match: int | None = None) -> StoredResource | None:
        """Write a tombstone version; return it, or None if there was nothing to delete."""

    def referrers(self, type_: str, id_: str, limit: int) -> list[tuple[str, str]]:
        """Return up to `limit` (type, id) of current resources whose indexed references target this one."""

    def read_history(
        self,
        type_: str | None,
        id_: str | None,
        *,
        since: datetime | None,
        at: tuple[datetime, datetime] | None,
        count: int,
        cursor: int | None,
    ) -> HistoryPage:
        """Return versions newest first, filtered by time, keyset-paged by cursor."""

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a compiled search: a page of matches, included resources, total and paging flags."""

    def conditional_create(
        self, op: ConditionalCreate
    ) -> tuple[StoredResource | None, StoredResource | None]:
        """Create `op.write` unless `op.query` matches: (the one match, None) or (None, the created).

        Two or more matches are a MultipleMatchesError. The create claims `op.key` (the
        criteria's guard) in the same transaction, so concurrent identical conditional creates
        cannot both create: the later one finds the earlier one's resource.
        """

    def transaction(self) -> AbstractContextManager[None]:
        """Run the enclosed calls in one database transaction (nested calls join it)."""

    def iter_current(self, type_: str | None = None) -> Iterator[StoredResource]:
        """Yield every current, non-deleted resource (streaming)."""

    def everything(
        self, patient_id: str, *, since: datetime | None, types: Sequence[str], count: int, cursor: int | None
    ) -> HistoryPage:
        """Return a page of the patient's compartment plus the resources it references."""

    def submit_export(self, request: ExportRequest) -> str:
        """Queue a Bulk Data export; return its job id."""
