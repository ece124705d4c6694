"""Who is asking and what they may touch, handed to every interaction.

Built by the auth layer from a validated token; the FHIR layer only reads it.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

Policy, in one place:
- `can(type, interaction)`: some granted scope names the type (or `*`) and the interaction
  (c, r, u, d, s); otherwise the interaction answers 403.
- `patient/` scopes bind the token to one patient. Types of the Patient compartment
  definition are then visible only inside that compartment: a read of another patient's
  resource answers 404, searches get a Compartment("Patient", id) restriction, included
  resources and history entries outside it are dropped, and writes must land inside it.
  Types outside the compartment (Practitioner, Organization, Medication, ...) are not
  patient data: they are readable when a scope names their type (or `*`).
- Parameter-restricted scopes (`patient/Observation.rs?category=...`) add their parameters
  to every search of the type and make reads of non-matching resources answer 404.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from server.errors import ForbiddenError
from server.errors import NotFoundError

if TYPE_CHECKING:
    from server.fhir.repository import FhirRepository
    from server.fhir.repository import StoredResource
    from server.fhir.search.query import SearchQuery

INTERACTIONS = "cruds"
_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """One granted clinical scope: context (patient|user|system), type or *, interactions, parameters."""

    context: str
    type: str
    interactions: frozenset[str]
    params: tuple[tuple[str, str], ...] = ()

    def covers(self, type_: str, interaction: str) -> bool:
        """Return whether this rule grants `interaction` on `type_`."""
        return (self.type == "*" or self.type == type_) and interaction in self.interactions


@dataclass(frozen=True, slots=True)
class AccessContext:
    """The caller: user, client, granted scopes and the patient a patient-scoped token is bound to."""

    user: str | None = None
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    patient: str | None = None
    remote_addr: str | None = None
    unrestricted: bool = True
    rules: tuple[ScopeRule, ...] = ()
    fhir_user: str | None = None

    def _granting(self, type_: str, interaction: str) -> list[ScopeRule]:
        return [r for r in self.rules if r.covers(type_, interaction)]

    def can(self, resource_type: str, interaction: str) -> bool:
        """Return whether the caller may perform `interaction` (c, r, u, d, s) on the type."""
        return self.unrestricted or bool(self._granting(resource_type, interaction))

    def require(self, resource_type: str, interaction: str) -> None:
        """Raise 403 unless the caller may perform `interaction` on the type."""
        if not self.can(resource_type, interaction):
            raise ForbiddenError(
                f"The token's scopes do not allow {_NAMES.get(interaction, interaction)} on {resource_type}",
                message_id="MSG_FORBIDDEN",
            )

    def compartment_patient(self, resource_type: str, interaction: str) -> str | None:
        """Return the patient whose compartment confines this access, or None when unconfined."""
        if self.unrestricted or self.patient is None:
            return None
        granting = self._granting(resource_type, interaction)
        if not granting or any(r.context != "patient" for r in granting):
            return None
        if resource_type not in _patient_members():
            return None
        return self.patient

    def restrictions(self, resource_type: str, interaction: str) -> tuple[tuple[str, str], ...] | None:
        """Return the search parameters every access must satisfy, or None when unrestricted."""
        if self.unrestricted:
            return None
        granting = self._granting(resource_type, interaction)
        if not granting or any(not r.params for r in granting):
            return None
        names = {name for r in granting for name, _ in r.params}
        if len(granting) == 1 or (len(names) == 1 and all(len(r.params) == 1 for r in granting)):
            # One rule, or several rules on the same single parameter: OR their values.
            if len(granting) == 1:
                return granting[0].params
            (name,) = names
            return ((name, ",".join(v for r in granting for _, v in r.params)),)
        # Different parameter sets cannot be OR'ed in one query: keep the first rule only,
        # which never returns more than was granted.
        return granting[0].params


OPEN = AccessContext()


def _patient_members() -> frozenset[str]:
    from server.fhir.search.definitions import compartment_members

    return frozenset(compartment_members("Patient"))


def restrict_query(ctx: AccessContext, query: SearchQuery, interaction: str = "s") -> SearchQuery:
    """Add the token's compartment and parameter restrictions to a search (403 for foreign types)."""
    from server.fhir.search.definitions import resource_types
    from server.fhir.search.query import Compartment

    if ctx.unrestricted:
        return query
    if not query.types and any(
        r.type == "*" and interaction in r.interactions and not r.params and r.context != "patient"
        for r in ctx.rules
    ):
        return query
    types = query.types or tuple(t for t in resource_types() if ctx.can(t, interaction))
    if not types:
        raise ForbiddenError("The token's scopes allow no search", message_id="MSG_FORBIDDEN")
    for type_ in types:
        ctx.require(type_, interaction)
    query = dataclasses.replace(query, types=types)
    patients = {ctx.compartment_patient(t, interaction) for t in types}
    patient = next((p for p in patients if p), None)
    if patient is not None:
        if query.compartment is None:
            query = dataclasses.replace(query, compartment=Compartment("Patient", patient))
        elif query.compartment.kind != "Patient" or query.compartment.owner != patient:
            raise NotFoundError(
                f"{query.compartment.kind}/{query.compartment.owner} is not known", message_id="MSG_NO_EXIST"
            )
    extra = _restriction_tests(ctx, types, interaction)
    if extra:
        query = dataclasses.replace(query, tests=(*query.tests, *extra))
    return query


def _restriction_tests(ctx: AccessContext, types: tuple[str, ...], interaction: str) -> tuple[Any, ...]:
    from server.fhir.http import FhirRequest
    from server.fhir.search.params import parse_search

    restricted = {t: ctx.restrictions(t, interaction) for t in types}
    params = next((p for p in restricted.values() if p), None)
    if params is None:
        return ()
    if any(restricted[t] != params for t in types):
        raise ForbiddenError(
            "Search one type at a time: the token restricts these types differently",
            message_id="MSG_FORBIDDEN",
        )
    parsed = parse_search(FhirRequest("GET", "", params=params), types, strict=True)
    return parsed.tests


def _matching_ids(
    repo: FhirRepository, ctx: AccessContext, type_: str, ids: Iterable[str], interaction: str
) -> set[str]:
    """Return which of the ids of `type_` the caller may see (compartment and parameters)."""
    from server.fhir.search.query import IdTest
    from server.fhir.search.query import SearchQuery

    ids = tuple(dict.fromkeys(ids))
    if not ids:
        return set()
    query = SearchQuery(types=(type_,), tests=(IdTest(ids),), count=len(ids), total="none")
    query = restrict_query(ctx, query, interaction)
    return {m.id for m in repo.search(query).matches}


def _confined(ctx: AccessContext, type_: str, interaction: str) -> bool:
    patient = ctx.compartment_patient(type_, interaction)
    return patient is not None or bool(ctx.restrictions(type_, interaction))


def check_visible(
    repo: FhirRepository, ctx: AccessContext, type_: str, id_: str, interaction: str = "r"
) -> None:
    """Raise 403 for a type outside the scopes and 404 for a resource outside the patient or parameters."""
    if ctx.unrestricted:
        return
    ctx.require(type_, interaction)
    if not _confined(ctx, type_, interaction):
        return
    stored = repo.read_resource(type_, id_)
    if stored is None or stored.deleted:
        return  # the interaction itself answers 404 / 410 for these
    if id_ not in _matching_ids(repo, ctx, type_, (id_,), "r"):
        raise NotFoundError(f"{type_}/{id_} is not known", message_id="MSG_NO_EXIST")


def check_write(
    ctx: AccessContext, type_: str, interaction: str, compartments: Iterable[tuple[str, str]]
) -> None:
    """Raise 403 unless the caller may write the type and the result stays in its patient compartment."""
    if ctx.unrestricted:
        return
    ctx.require(type_, interaction)
    patient = ctx.compartment_patient(type_, interaction)
    if patient is not None and ("Patient", patient) not in set(compartments):
        raise ForbiddenError(
            f"A {type_} written with this token must belong to Patient/{patient}", message_id="MSG_FORBIDDEN"
        )


def filter_visible(
    repo: FhirRepository, ctx: AccessContext, items: list[Any], interaction: str = "r"
) -> list[Any]:
    """Keep the matches / stored versions (objects with .type and .id) the caller may see."""
    if ctx.unrestricted or not items:
        return items
    by_type: dict[str, set[str]] = {}
    for item in items:
        by_type.setdefault(item.type, set()).add(item.id)
    allowed: dict[str, set[str] | None] = {}
    for type_, ids in by_type.items():
        if not ctx.can(type_, interaction):
            allowed[type_] = set()
        elif _confined(ctx, type_, interaction):
            allowed[type_] = _matching_ids(repo, ctx, type_, ids, interaction)
        else:
            allowed[type_] = None
    return [i for i in items if allowed[i.type] is None or i.id in allowed[i.type]]  # type: ignore[operator]


def visible_versions(
    repo: FhirRepository, ctx: AccessContext, entries: list[StoredResource]
) -> list[StoredResource]:
    """Keep history entries the caller may see (deleted ones follow their type's rule)."""
    if ctx.unrestricted:
        return entries
    live = [e for e in entries if not e.deleted]
    kept = {(e.type, e.id) for e in filter_visible(repo, ctx, live)}
    return [
        e
        for e in entries
        if (e.type, e.id) in kept or (e.deleted and ctx.can(e.type, "r") and not _confined(ctx, e.type, "r"))
    ]
