"""Composition/{id}/$document: a Composition and what it cites, as a `document` Bundle.

https://hl7.org/fhir/R4B/composition-operation-document.html ; https://hl7.org/fhir/R4B/documents.html
The Composition comes first, then every local resource it references (subject, author, event
detail, section entries, ...) once, each only if the caller may read it (a resource the token may
not see is left out, as it would be from a search). The Bundle's identifier is fixed per
Composition version (the same document asked twice is the same document); its timestamp is when
that version was stored. `persist` is not supported (the document is assembled on each call).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from server.errors import NotSupportedError
from server.fhir.access import AccessContext
from server.fhir.access import version_visible
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.read import current
from server.fhir.operations.registry import register
from server.fhir.repository import FhirRepository

_NAMESPACE = uuid.UUID("8f4c7a52-3b5e-4d0a-9a55-0c3f7f1e2d17")


def _references(node: Any) -> list[str]:
    """Every local "Type/id" reference inside a resource, in document order."""
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.count("/") == 1 and ref[:1].isupper():
            found.append(ref)
        for key, value in node.items():
            if key != "reference":
                found += _references(value)
    elif isinstance(node, list):
        for item in node:
            found += _references(item)
    return found


@register("Composition", "document", instance=True)
def document(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str
) -> FhirResponse:
    """Answer Composition/{id}/$document with a document Bundle."""
    if any(k == "persist" and v == "true" for k, v in req.params):
        raise NotSupportedError("$document does not persist documents", expression=("persist",))
    stored = current(repo, "Composition", id_, ctx)
    composition = orjson.loads(stored.body)
    base = req.base_url.rstrip("/")
    entries = [{"fullUrl": f"{base}/Composition/{id_}", "resource": composition}]
    for ref in dict.fromkeys(_references(composition)):
        ref_type, ref_id = ref.split("/")
        cited = repo.read_resource(ref_type, ref_id) if ref != f"Composition/{id_}" else None
        if cited is None or cited.deleted or not ctx.can(ref_type, "r"):
            continue
        if version_visible(repo, ctx, cited, "r"):
            entries.append({"fullUrl": f"{base}/{ref}", "resource": orjson.loads(cited.body)})
    identity = uuid.uuid5(_NAMESPACE, f"{base}/Composition/{id_}/_history/{stored.version}")
    bundle = {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{identity}"},
        "type": "document",
        "timestamp": stored.last_updated.isoformat().replace("+00:00", "Z"),
        "entry": entries,
    }
    return FhirResponse(200, bundle, {"Content-Type": "application/fhir+json"})


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare Composition/$document."""
    for entry in statement["rest"][0]["resource"]:
        if entry["type"] == "Composition":
            entry.setdefault("operation", []).append(
                {
                    "name": "document",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Composition-document",
                }
            )
