"""Who is asking and what they may touch: one policy, asked for every resource version.

Built by the auth layer from a validated token; the FHIR layer only reads it.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

The decision is `permits(ctx, type, interaction, resource)`: every path that lets a resource
version leave the server (read, vread, history, search and its includes, conditional matching,
bundle entries, $everything, $export, /rehab, the pages) and every write asks it, on that
version's JSON. Nothing filters on its own. The rules:

- Default deny: `AccessContext()` grants nothing. In-process callers (CLI, seeding,
  `rehabfhir load`) use the named `SYSTEM` context.
- A scope rule grants a type (or `*`) and interactions (c, r, u, d, s). No granting rule: 403
  for type-level interactions; the type's resources never appear anywhere.
- A version is permitted when some granting rule permits it:
  - `patient/` rules: every Patient the version points to is the token's patient. The
    patients are its Patient compartment memberships, every Reference anywhere in it whose
    target is `Patient/x`, and its own id for a Patient. A type of the Patient compartment
    must point to the patient; a type that points to no patient (Organization, Practitioner,
    Location, Medication, terminology) is readable but never writable by a patient rule.
  - parameter restrictions (`patient/Observation.rs?category=...`): the version matches the
    parameters, evaluated on its own index rows (so history and vread are judged per version).
- Owned types (Subscription): a version is permitted only to its owner, named by the one owner
  tag the server puts on every version it stores: the client alone for a backend service's
  token (`OWNER_TAG`, code the client id), the client and the signed-in user otherwise
  (`OWNER_USER_TAG`, code `<user>@<client>`; see `owner_subject`), so two users of one app
  never see each other's. Any grant, `system/` included, is judged so (as $status, $events and
  PUT /Subscription/id refuse others): only the in-process `SYSTEM` context sees every owner's.
  Under a `patient/` rule an owned version may point to no patient but the token's.
- A deletion (tombstone) version is judged by the version before it.
- Searches are narrowed in SQL first (`restrict_query`: compartment, no other patient, the
  restriction parameters) so that paging stays right; every page is then checked per version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import quote

import orjson

from server.errors import ForbiddenError
from server.errors import NotFoundError

if TYPE_CHECKING:
    from server.fhir.repository import FhirRepository
    from server.fhir.repository import StoredResource
    from server.fhir.search.query import SearchQuery

INTERACTIONS = "cruds"
# Resources that belong to whoever created them: the owner tag names the owner on every version.
OWNED_TYPES = frozenset({"Subscription"})
OWNER_TAG = "https://rehabfhir.org/fhir/CodeSystem/owner-client"  # code: the client (no user)
OWNER_USER_TAG = "https://rehabfhir.org/fhir/CodeSystem/owner-client-user"  # code: <user>@<client>
OWNER_TAGS = (OWNER_TAG, OWNER_USER_TAG)
WRITES = frozenset("cud")
_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """One granted clinical scope: context (patient|user|system), type or *, interactions, parameters."""

    context: str
    type: str
    interactions: frozenset[str]
    params: tuple[tuple[str, str], ...] = ()

    def covers(self, type_: str, interaction: str) -> bool:
        """Return whether this rule grants `interaction` on `type_`.

        Audit records are written by systems only (IHE RESTful ATNA "record audit event"): a
        user or patient rule never grants a write of AuditEvent, on any path.
        """
        if type_ == "AuditEvent" and interaction in WRITES and self.context != "system":
            return False
        return (self.type == "*" or self.type == type_) and interaction in self.interactions


@dataclass(frozen=True, slots=True)
class AccessContext:
    """The caller: user, client, granted scopes and the patient a patient-scoped token is bound to.

    The default grants nothing; `SYSTEM` (unrestricted) is for in-process callers only.
    """

    user: str | None = None
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    patient: str | None = None
    remote_addr: str | None = None
    unrestricted: bool = False
    rules: tuple[ScopeRule, ...] = ()
    fhir_user: str | None = None
    # The token's jti and refresh-token family (what auth revokes): what it creates keeps them.
    token_id: str | None = None
    token_family: str | None = None

    def _granting(self, type_: str, interaction: str) -> list[ScopeRule]:
        return [r for r in self.rules if r.covers(type_, interaction)]

    def can(self, resource_type: str, interaction: str) -> bool:
        """Return whether some rule grants `interaction` (c, r, u, d, s) on the type."""
        return self.unrestricted or bool(self._granting(resource_type, interaction))

    def require(self, resource_type: str, interaction: str) -> None:
        """Raise 403 unless the caller may perform `interaction` on the type."""
        if not self.can(resource_type, interaction):
            raise ForbiddenError(
                f"The token's scopes do not allow {_NAMES.get(interaction, interaction)} on {resource_type}",
                message_id="MSG_FORBIDDEN",
            )

    def confined(self, resource_type: str, interaction: str) -> bool:
        """Whether access to the type depends on the resource (patient or parameter rules)."""
        if self.unrestricted:
            return False
        granting = self._granting(resource_type, interaction)
        if resource_type in OWNED_TYPES:
            return bool(granting)
        return bool(granting) and all(r.context == "patient" or r.params for r in granting)

    def compartment_patient(self, resource_type: str, interaction: str) -> str | None:
        """Return the patient whose data alone this access may touch, or None when unconfined."""
        if self.unrestricted or self.patient is None:
            return None
        granting = self._granting(resource_type, interaction)
        if not granting or any(r.context != "patient" for r in granting):
            return None
        return self.patient

    def restrictions(self, resource_type: str, interaction: str) -> tuple[tuple[str, str], ...] | None:
        """Return the search parameters a SQL search must add, or None when unrestricted.

        A superset filter: with several differently restricted rules the per-version check
        (`permits`) is what decides.
        """
        if self.unrestricted:
            return None
        granting = self._granting(resource_type, interaction)
        if not granting or any(not r.params for r in granting):
            return None
        names = {name for r in granting for name, _ in r.params}
        if len(granting) == 1:
            return granting[0].params
        if len(names) == 1 and all(len(r.params) == 1 for r in granting):
            (name,) = names
            return ((name, ",".join(v for r in granting for _, v in r.params)),)
        return None  # rules on different parameters: decided per version only


SYSTEM = AccessContext(user="system", client_id="rehabfhir", unrestricted=True)
DENY = AccessContext()


# -- the decision ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _members_cache() -> frozenset[str]:
    from server.fhir.search.definitions import compartment_members

    return frozenset(compartment_members("Patient"))


def _references(value: Any) -> list[str]:
    """Every Reference.reference string anywhere in the JSON (contained resources included)."""
    out: list[str] = []
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            ref = item.get("reference")
            if type(ref) is str:
                out.append(ref)
            for v in item.values():
                if type(v) is dict or type(v) is list:
                    push(v)
        else:
            for v in item:
                if type(v) is dict or type(v) is list:
                    push(v)
    return out


def patients_of(resource: dict[str, Any]) -> set[str]:
    """Return the ids of every Patient the resource points to (or is).

    Patient compartment membership is defined by reference parameters, so every member's
    patient is among its references; the walk also finds references no parameter indexes.
    """
    found: set[str] = set()
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        found.add(resource["id"])
    for ref in _references(resource):
        if ref.startswith(("#", "urn:")):
            continue
        parts = ref.split("?", 1)[0].split("/_history/", 1)[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
            found.add(parts[-1])
        elif "?" in ref and ref.startswith("Patient"):
            found.add("?")  # a conditional reference to some patient: never the token's for sure
    return found


def _patient_ok(patient: str, type_: str, interaction: str, resource: dict[str, Any]) -> bool:
    pts = patients_of(resource)
    if pts - {patient}:
        return False
    if interaction in WRITES or type_ in _members_cache():
        return patient in pts
    return True


@lru_cache(maxsize=256)
def _restriction_tests(types: tuple[str, ...], params: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    from server.fhir.http import FhirRequest
    from server.fhir.search.params import parse_search

    return parse_search(FhirRequest("GET", "", params=params), types, strict=True).tests


def _params_ok(type_: str, params: tuple[tuple[str, str], ...], resource: dict[str, Any]) -> bool:
    from server.fhir.search.matching import matches

    try:
        tests = _restriction_tests((type_,), params)
    except Exception:  # noqa: BLE001  a restriction that does not parse grants nothing
        return False
    return matches(tests, resource)


def owner_subject(ctx: AccessContext) -> str | None:
    """Who besides the client owns what this token creates: its user (the token's `sub`), else its
    patient; None for a backend service (client_credentials), whose client alone owns it.

    The user id, not fhirUser: two accounts may name the same fhirUser, and an account's
    fhirUser can be changed; the id is the identity the grant was given to.
    """
    if ctx.user:
        return ctx.user
    return f"Patient/{ctx.patient}" if ctx.patient else None


def owner_tag(client_id: str, subject: str | None = None) -> dict[str, str]:
    """The meta.tag naming the owner (a client, or a client and a user) of a resource of an owned type.

    The subject is percent-encoded (no "@" in it), so `<subject>@<client>` names one pair only.
    """
    if subject is None:
        return {"system": OWNER_TAG, "code": client_id}
    return {"system": OWNER_USER_TAG, "code": f"{quote(subject, safe='/:')}@{client_id}"}


def owner_of(ctx: AccessContext) -> dict[str, str] | None:
    """The owner tag of what `ctx` creates (None for a context without a client: it owns nothing)."""
    if not ctx.client_id:
        return None
    return owner_tag(ctx.client_id, owner_subject(ctx))


def _owned(ctx: AccessContext, resource: dict[str, Any]) -> bool:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    mine = owner_of(ctx)
    return mine is not None and isinstance(tags, list) and mine in tags


def _patient_only(patient: str, resource: dict[str, Any]) -> bool:
    """An owned version under a patient rule: it points to no patient but the token's."""
    return not (patients_of(resource) - {patient})


def permits(ctx: AccessContext, type_: str, interaction: str, resource: dict[str, Any] | None) -> bool:
    """Return whether `ctx` may perform `interaction` on this version of a resource of `type_`."""
    if ctx.unrestricted:
        return True
    granting = ctx._granting(type_, interaction)
    if not granting:
        return False
    if resource is None:
        return False
    if type_ in OWNED_TYPES and not _owned(ctx, resource):
        return False
    owned = type_ in OWNED_TYPES
    for rule in granting:
        if rule.context == "patient" and (
            ctx.patient is None
            or not (
                _patient_only(ctx.patient, resource)
                if owned
                else _patient_ok(ctx.patient, type_, interaction, resource)
            )
        ):
            continue
        if rule.params and not _params_ok(type_, rule.params, resource):
            continue
        return True
    return False


def _json(body: str | bytes | None) -> dict[str, Any] | None:
    if body is None:
        return None
    value = orjson.loads(body)
    return value if isinstance(value, dict) else None


def _judged_body(repo: FhirRepository, stored: StoredResource) -> dict[str, Any] | None:
    """The JSON a version is judged on: its own, or for a deletion the version before it."""
    if not stored.deleted:
        return _json(stored.body)
    version = stored.version - 1
    while version >= 1:
        prior = repo.read_version(stored.type, stored.id, version)
        if prior is None:
            return None
        if not prior.deleted:
            return _json(prior.body)
        version -= 1
    return None


def version_visible(
    repo: FhirRepository, ctx: AccessContext, stored: StoredResource, interaction: str = "r"
) -> bool:
    """Return whether the caller may see (or act on, for u/d) this stored version."""
    if ctx.unrestricted:
        return True
    if not ctx.can(stored.type, interaction):
        return False
    if not ctx.confined(stored.type, interaction):
        return True
    return permits(ctx, stored.type, interaction, _judged_body(repo, stored))


def require_visible(
    repo: FhirRepository, ctx: AccessContext, stored: StoredResource | None, interaction: str = "r"
) -> None:
    """Raise 404 unless the caller may see this version (a version it may not see does not exist)."""
    if stored is None or ctx.unrestricted:
        return
    if not version_visible(repo, ctx, stored, interaction):
        raise NotFoundError(f"{stored.type}/{stored.id} is not known", message_id="MSG_NO_EXIST")


def check_visible(
    repo: FhirRepository, ctx: AccessContext, type_: str, id_: str, interaction: str = "r"
) -> None:
    """Raise 403 for a type outside the scopes and 404 for a current version the caller may not see."""
    if ctx.unrestricted:
        return
    ctx.require(type_, interaction)
    if not ctx.confined(type_, interaction):
        return
    stored = repo.read_resource(type_, id_)
    if stored is None or version_visible(repo, ctx, stored, interaction):
        return
    if interaction in WRITES and version_visible(repo, ctx, stored, "r"):
        # The caller sees it but may not change it (e.g. an Organization under a patient grant).
        raise ForbiddenError(
            f"The token may read {type_}/{id_} but not {_NAMES[interaction]} it", message_id="MSG_FORBIDDEN"
        )
    raise NotFoundError(f"{type_}/{id_} is not known", message_id="MSG_NO_EXIST")


def check_write(ctx: AccessContext, type_: str, interaction: str, resource: dict[str, Any]) -> None:
    """Raise 403 unless the caller may write this resource (type, its patients, restrictions)."""
    if ctx.unrestricted:
        return
    ctx.require(type_, interaction)
    if ctx.confined(type_, interaction) and not permits(ctx, type_, interaction, resource):
        who = f"Patient/{ctx.patient}" if ctx.patient else "the token's restrictions"
        raise ForbiddenError(
            f"This {type_} is outside what the token may write (it must belong to {who}"
            " and reference no other patient)",
            message_id="MSG_FORBIDDEN",
        )


def visible(ctx: AccessContext, items: list[Any], interaction: str = "r") -> list[Any]:
    """Keep the live items (objects with .type and .body, e.g. search matches) the caller may see."""
    if ctx.unrestricted or not items:
        return items
    out = []
    for item in items:
        if not ctx.can(item.type, interaction):
            continue
        if ctx.confined(item.type, interaction) and not permits(
            ctx, item.type, interaction, _json(item.body)
        ):
            continue
        out.append(item)
    return out


def visible_versions(
    repo: FhirRepository, ctx: AccessContext, entries: list[StoredResource], interaction: str = "r"
) -> list[StoredResource]:
    """Keep the history entries (versions, deletions included) the caller may see."""
    if ctx.unrestricted:
        return entries
    return [e for e in entries if version_visible(repo, ctx, e, interaction)]


# -- narrowing a search in SQL (a superset of what `permits` keeps) -------------------


def restrict_query(ctx: AccessContext, query: SearchQuery, interaction: str = "s") -> SearchQuery:
    """Narrow a search in SQL to what the token may see (403 for types it may not search).

    Adds, per type, the patient confinement and the scope's parameter restrictions; the
    targets of chains and the sources of `_has` are confined the same way, so neither can
    reveal what the caller may not see.
    """
    from server.fhir.search.definitions import resource_types
    from server.fhir.search.query import Compartment
    from server.fhir.search.query import TypeTest

    if ctx.unrestricted:
        return query
    if not query.types and any(
        r.type == "*" and interaction in r.interactions and not r.params and r.context != "patient"
        for r in ctx.rules
    ):
        owned = [
            TypeTest(t, tuple(_owner_tests(ctx, t))) for t in sorted(OWNED_TYPES) if ctx.can(t, interaction)
        ]
        return dataclasses.replace(query, tests=(*(_nested(ctx, t) for t in query.tests), *owned))
    types = query.types or tuple(t for t in resource_types() if ctx.can(t, interaction))
    if not types:
        raise ForbiddenError("The token's scopes allow no search", message_id="MSG_FORBIDDEN")
    for type_ in types:
        ctx.require(type_, interaction)
    patients = {p for p in (ctx.compartment_patient(t, interaction) for t in types) if p}
    if query.compartment is not None and query.compartment.kind == "Patient":
        if patients - {query.compartment.owner}:
            raise NotFoundError(
                f"{query.compartment.kind}/{query.compartment.owner} is not known", message_id="MSG_NO_EXIST"
            )
    compartment = query.compartment
    if len(types) == 1 and patients and compartment is None and types[0] in _members_cache():
        # The common case, answered from the compartment index: one member type, one patient.
        compartment = Compartment("Patient", next(iter(patients)))
    tests = [_nested(ctx, t) for t in query.tests]
    tests += _confine(ctx, types, interaction, in_compartment=compartment is not None)
    return dataclasses.replace(query, types=types, compartment=compartment, tests=tuple(tests))


def _type_confinement(ctx: AccessContext, type_: str, interaction: str, in_compartment: bool) -> list[Any]:
    from server.fhir.search.query import PatientOnlyTest

    tests: list[Any] = []
    patient = ctx.compartment_patient(type_, interaction)
    if patient is not None:
        member = type_ in _members_cache() and not in_compartment
        tests.append(PatientOnlyTest(patient, (type_,) if member else ()))
    params = ctx.restrictions(type_, interaction)
    if params:
        tests += _restriction_tests((type_,), params)
    if type_ in OWNED_TYPES:
        tests += _owner_tests(ctx, type_)
    return tests


def _owner_tests(ctx: AccessContext, type_: str) -> list[Any]:
    """`_tag=<owner tag>`: the caller's own resources (none for a context without a client)."""
    tag = owner_of(ctx)
    if tag is None:
        value = f"{OWNER_TAG}#none|-"  # a system no version is tagged with
    else:
        value = f"{_escaped(tag['system'])}|{_escaped(tag['code'])}"
    return list(_restriction_tests((type_,), (("_tag", value),)))


def _escaped(text: str) -> str:
    """A token search value's part with its separators escaped (R4B search.html#escaping)."""
    for ch in "\\|,$":
        text = text.replace(ch, "\\" + ch)
    return text


def _confine(ctx: AccessContext, types: tuple[str, ...], interaction: str, in_compartment: bool) -> list[Any]:
    """The tests confining a search over `types` (per type when there are several)."""
    from server.fhir.search.query import TypeTest

    if len(types) == 1:
        return _type_confinement(ctx, types[0], interaction, in_compartment)
    out: list[Any] = []
    for type_ in types:
        tests = _type_confinement(ctx, type_, interaction, in_compartment)
        if tests:
            out.append(TypeTest(type_, tuple(tests)))
    return out


def _nested(ctx: AccessContext, test: Any) -> Any:
    """Confine the resources a chain or `_has` looks at (403 when the caller may search none)."""
    from server.fhir.search.query import AllTest
    from server.fhir.search.query import ChainTest
    from server.fhir.search.query import HasTest
    from server.fhir.search.query import TypeTest

    if isinstance(test, HasTest):
        ctx.require(test.source, "s")
        extra = _confine(ctx, (test.source,), "s", in_compartment=False)
        inner = _nested(ctx, test.inner)
        return dataclasses.replace(test, inner=AllTest((inner, *extra)) if extra else inner)
    if isinstance(test, ChainTest):
        targets = tuple(t for t in test.targets if ctx.can(t, "s"))
        if not targets:
            ctx.require(test.targets[0] if test.targets else "*", "s")
        extra = _confine(ctx, targets, "s", in_compartment=False)
        inner = _nested(ctx, test.inner)
        return dataclasses.replace(test, targets=targets, inner=AllTest((inner, *extra)) if extra else inner)
    if isinstance(test, AllTest | TypeTest):
        return dataclasses.replace(test, tests=tuple(_nested(ctx, t) for t in test.tests))
    return test
