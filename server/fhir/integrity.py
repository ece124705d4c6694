"""Referential integrity: literal references to this server resolve; referenced resources stay.

https://hl7.org/fhir/R4B/references.html#literal (HAPI's default enforcement of both rules)

A write (create, update, patch, bundle entry, load) whose `Reference.reference` names a
resource of this server (`Type/id`, `Type/id/_history/v`, or the same under the server's base
URL) is refused with 422 unless that resource exists, is not deleted, and the writer's own
access policy could read it: to a patient-scoped token another patient's resource is "not
found" like a missing one, so a write cannot probe which ids exist. A transaction resolves
its own entries first (`FhirRequest.bundle_targets`). Deleting a resource that current
resources still reference answers 409 naming them. `REHABFHIR_REFERENTIAL_INTEGRITY=off`
(bulk loads in any order) and `REHABFHIR_DELETE_REFERENCED=on` switch the two rules off.

Not checked: stored Bundles (their entries resolve against the Bundle), contained (`#id`),
`urn:` (a transaction rewrites its own), conditional (`Type?criteria`, resolved by the
transaction) and external (other servers') references.
Referrers are found through the reference search parameters' index (idx_reference), so a
reference in an element no search parameter covers does not block a delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.errors import BusinessRuleError
from server.errors import FhirError
from server.errors import VersionConflictError
from server.fhir.access import AccessContext
from server.fhir.access import check_visible
from server.fhir.http import FhirRequest
from server.fhir.outcomes import issue
from server.fhir.repository import FhirRepository
from server.fhir.resources import ID_RE
from server.fhir.resources import resource_types

_KNOWN = frozenset(resource_types())
_NAMED = 10  # referrers named in a 409
Target = tuple[str, str, int | None]  # type, id, version of a version-specific reference


def references(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (FHIRPath of the element, reference string) for every Reference.reference."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield f"{where}.reference", value
            elif isinstance(value, dict | list):
                yield from references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict | list):
                yield from references(value, f"{where}[{i}]")


def local_target(reference: str, base_url: str) -> Target | None:
    """Return (type, id, version or None) when the reference names a resource of this server."""
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    if reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1 :]
    elif "://" in reference:
        return None  # another server's resource
    parts = reference.split("/")
    version = None
    if len(parts) == 4 and parts[2] == "_history" and parts[3].isascii() and parts[3].isdigit():
        version, parts = int(parts[3]), parts[:2]
    if len(parts) != 2 or parts[0] not in _KNOWN or not ID_RE.fullmatch(parts[1]):
        return None
    return parts[0], parts[1], version


def local_references(type_: str, resource: dict[str, Any], base_url: str) -> list[tuple[str, str, Target]]:
    """Return (FHIRPath, reference, target) for each literal reference to this server in the resource."""
    if type_ == "Bundle":
        return []  # a stored Bundle (document, collection) resolves its references within itself
    out = []
    own = (type_, resource.get("id"))
    for where, reference in references(resource, type_):
        target = local_target(reference, base_url)
        if target is not None and target[:2] != own:
            out.append((where, reference, target))
    return out


def not_found(where: str, reference: str) -> dict[str, Any]:
    """The issue of a reference that does not resolve."""
    return issue(
        "error",
        "not-found",
        f"{where} refers to {reference}, which is not a resource of this server",
        [where],
        message_id="MSG_REFERENCE_NOT_FOUND",
    )


def _seen(repo: FhirRepository, ctx: AccessContext, type_: str, id_: str) -> bool:
    """Whether the writer's policy could read the resource (an unseen one is not found)."""
    try:
        check_visible(repo, ctx, type_, id_, "r")
    except FhirError:
        return False
    return True


def resolves(repo: FhirRepository, ctx: AccessContext, type_: str, id_: str, version: int | None) -> bool:
    """Whether the target exists, is not deleted, and the caller may read it."""
    stored = repo.read_resource(type_, id_)
    if stored is None or stored.deleted:
        return False
    if version is not None and version != stored.version:
        old = repo.read_version(type_, id_, version)
        if old is None or old.deleted:
            return False
    # The writer's own fhirUser (the practitioner a session records) is theirs to name.
    return ctx.unrestricted or ctx.fhir_user == f"{type_}/{id_}" or _seen(repo, ctx, type_, id_)


def check_references(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, resource: dict[str, Any]
) -> None:
    """Raise 422 naming every literal reference to this server that does not resolve."""
    if not req.referential_integrity:
        return
    known: dict[Target, bool] = {}
    shared = req.resolved if req.resolved is not None else {}  # a transaction's earlier entries' answers
    issues = []
    for where, reference, target in local_references(type_, resource, req.base_url):
        name = f"{target[0]}/{target[1]}"
        if name in req.bundle_targets:
            continue
        answers = known if name in req.bundle_deletes else shared  # a target the bundle deletes: asked again
        if target not in answers:
            answers[target] = resolves(repo, ctx, *target)
        if not answers[target]:
            issues.append(not_found(where, reference))
    if issues:
        first = issues[0]
        raise BusinessRuleError(
            f"{type_} has {len(issues)} reference(s) that do not resolve; first: {first['diagnostics']}",
            expression=first["expression"],
            issues=issues,
            message_id="MSG_REFERENCE_NOT_FOUND",
        )


def check_referrers(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str) -> None:
    """Raise 409 naming the current resources that still reference the one to be deleted.

    Referrers the caller may not read are counted, never named. In a transaction, referrers
    the same Bundle writes or deletes are left to their own entries (whose references are
    checked in turn).
    """
    if req.delete_referenced:
        return
    found = [
        (t, i)
        for t, i in repo.referrers(type_, id_, limit=_NAMED + 1 + len(req.bundle_targets))
        if f"{t}/{i}" not in req.bundle_targets | req.bundle_deletes and (t, i) != (type_, id_)
    ]
    if not found:
        return
    named = [f"{t}/{i}" for t, i in found[:_NAMED] if ctx.unrestricted or _seen(repo, ctx, t, i)]
    unseen = len(found[:_NAMED]) - len(named)
    more = "" if len(found) <= _NAMED else " and more"
    who = ", ".join(named) if named else ""
    if unseen:
        who += f"{', ' if who else ''}{unseen} resource(s) this token cannot read"
    raise VersionConflictError(
        f"{type_}/{id_} is referenced by {who}{more}; delete or change those first",
        message_id="MSG_DELETE_REFERENCED",
    )
