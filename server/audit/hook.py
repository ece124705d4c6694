"""Where audit records come from: a repository wrapper for writes, a classifier for requests.

AuditedRepository wraps the request's repository. It notes every create, update and delete
and, when the outermost transaction() block ends, hands them to a callback that appends
their AuditEvents inside that same transaction, before the commit: a write and its audit
record commit together or not at all. Reads, searches, operations and failures are audited
per request (see flask_integration). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from server.audit.events import trail_id
from server.errors import MethodNotAllowedError
from server.fhir import routing
from server.fhir.repository import StoredResource
from server.fhir.repository import WriteRequest

AUDIT_TYPE = "AuditEvent"
APPEND_ONLY = "AuditEvent is append-only: the server's trail and submitted events cannot be changed"


@dataclass(frozen=True, slots=True)
class Write:
    """One stored version, the patients whose compartment it is in, and the interaction that wrote it."""

    stored: StoredResource
    patients: tuple[str, ...]
    interaction: str  # create, update, patch or delete: what the handler asked for, never guessed


def _patients(type_: str, id_: str, write: WriteRequest | None) -> tuple[str, ...]:
    found = [f"Patient/{owner}" for kind, owner in (write.compartments if write else ()) if kind == "Patient"]
    if type_ == "Patient" and f"Patient/{id_}" not in found:
        found.insert(0, f"Patient/{id_}")
    return tuple(dict.fromkeys(found))


class AuditedRepository:
    """A FhirRepository that records its writes and audits them before its transactions commit.

    It uses the inner repository's transaction() and its before-commit hook: the writes noted
    during the outermost block are handed to `on_commit` inside that transaction.
    """

    def __init__(self, inner: Any, on_commit: Callable[[Any, list[Write]], None]) -> None:
        self.inner = inner
        self._on_commit = on_commit
        self._writes: list[Write] = []
        self.audited = 0  # write events appended (and committed) so far in this request
        inner.before_commit.append(self._audit_writes)
        inner.after_rollback.append(self._writes.clear)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The inner repository's transaction (its before-commit hook audits the writes)."""
        return self.inner.transaction()  # type: ignore[no-any-return]

    def _audit_writes(self) -> None:
        writes = list(self._writes)
        self._writes.clear()
        if writes:
            self._on_commit(self.inner, writes)
            self.audited += len(writes)

    def _record(self, stored: StoredResource, patients: tuple[str, ...], interaction: str) -> StoredResource:
        self._writes.append(Write(stored, patients, interaction))
        return stored

    def _refuse_change(self, type_: str, id_: str) -> None:
        """AuditEvents are append-only: another system may submit a new one (IHE ATNA "Record Audit
        Event"), kept as received (a create, or an update that creates); none is ever changed or
        deleted, and numeric ids name the server's own trail. Runs inside the write's transaction.
        """
        if type_ == AUDIT_TYPE and (trail_id(id_) or self.inner.read_resource(type_, id_)):
            raise MethodNotAllowedError(APPEND_ONLY)

    def create_resource(self, type_: str, write: WriteRequest, id_: str) -> StoredResource:
        """Create (the server assigns the id, so an AuditEvent may always be created), noting it."""
        with self.transaction():
            stored = self.inner.create_resource(type_, write, id_)
            return self._record(stored, _patients(type_, id_, write), "create")

    def conditional_create(self, op: Any) -> tuple[StoredResource | None, StoredResource | None]:
        """A create under If-None-Exist: noted (so audited in its transaction) when it created."""
        with self.transaction():
            match, created = self.inner.conditional_create(op)
            if created is not None:
                self._record(created, _patients(op.type, op.id, op.write), "create")
            return match, created

    def update_resource(
        self, type_: str, id_: str, write: WriteRequest, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Update (or patch: the write says which), noting the new version."""
        with self.transaction():
            self._refuse_change(type_, id_)
            stored, created = self.inner.update_resource(type_, id_, write, if_match)
            self._record(stored, _patients(type_, id_, write), write.interaction or "update")
            return stored, created

    def delete_resource(self, type_: str, id_: str, if_match: int | None = None) -> StoredResource | None:
        """Delete, noting the tombstone and the patients the last live version belonged to."""
        if type_ == AUDIT_TYPE:
            raise MethodNotAllowedError(APPEND_ONLY)
        with self.transaction():
            before = self.inner.read_resource(type_, id_)
            stored = self.inner.delete_resource(type_, id_, if_match)
            if stored is not None and before is not None and not before.deleted:
                self._record(stored, patients_of_text(before.body, type_), "delete")
            return stored


# -- request classification (framework-free) ---------------------------------------------


# The audit names a request's interaction with the route table (server/fhir/routing.py): the
# interaction a handler's response named (flask.g.fhir_interaction), else the route's, else
# (no route: 404/405) one named after the method.
Interaction = routing.Interaction
classify = routing.interaction_of


# -- patients whose data a body carries -----------------------------------------------------


def patients_of(resource: Any, depth: int = 0) -> tuple[str, ...]:
    """Patient references whose compartment holds the resource (for a Bundle: its entries)."""
    if not isinstance(resource, dict):
        return ()
    rtype = resource.get("resourceType")
    if rtype == "Bundle" and depth < 2:
        found: dict[str, None] = {}
        for entry in resource.get("entry") or ():
            if isinstance(entry, dict):
                for patient in patients_of(entry.get("resource"), depth + 1):
                    found[patient] = None
        return tuple(found)
    if rtype == "Patient":
        return (f"Patient/{resource.get('id')}",) if resource.get("id") else ()
    if not isinstance(rtype, str) or not in_patient_compartment(rtype):
        return ()
    from server.fhir.search.indexer import compartments_of

    try:
        pairs = compartments_of(resource, _PATIENT)
    except Exception:  # an unknown type or odd shape must not stop the audit
        return ()
    return tuple(f"Patient/{owner}" for kind, owner in pairs if kind == "Patient")


_PATIENT = ("Patient",)


def in_patient_compartment(type_: str) -> bool:
    """Whether resources of the type can belong to a Patient compartment."""
    from server.fhir.search.definitions import compartment_params

    return type_ == "Patient" or bool(compartment_params("Patient", type_))


def patients_of_text(text: str | bytes | None, type_: str | None = None) -> tuple[str, ...]:
    """patients_of on JSON text, parsing it only when the type can hold patient data."""
    if not text or (type_ is not None and type_ != "Bundle" and not in_patient_compartment(type_)):
        return ()
    try:
        return patients_of(orjson.loads(text))
    except orjson.JSONDecodeError:
        return ()
