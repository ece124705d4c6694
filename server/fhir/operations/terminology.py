"""Our CodeSystems, ValueSets and ConceptMap as resources; CodeSystem/$lookup and ConceptMap/$translate.

The resources are built from the rehab measure catalog (fhir_mapping.terminology, handed in
by the app's composition through `use`: server.fhir does not import fhir_mapping) and seeded
with `seed` (PUT with fixed ids, only when missing or changed); the two operations answer from
the catalog itself, so they work before seeding and never drift from it.
https://hl7.org/fhir/R4B/codesystem-operation-lookup.html
https://hl7.org/fhir/R4B/conceptmap-operation-translate.html
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.errors import NotSupportedError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.update import update
from server.fhir.operations.registry import register
from server.fhir.repository import FhirRepository

_JSON = {"Content-Type": "application/fhir+json"}


@dataclass(frozen=True)
class Terminology:
    """Where the concepts come from: lookup, translate, the resources to seed, the ConceptMap's URL."""

    lookup: Callable[[str, str], dict[str, Any] | None]
    translate: Callable[[str, str, str | None], list[dict[str, Any]]]
    resources: Callable[[], list[dict[str, Any]]]
    concept_map_url: str


_source: list[Terminology] = []


def use(source: Terminology) -> None:
    """Answer $lookup, $translate and `seed` from this source (set once by the app's composition)."""
    _source[:] = [source]


def _terminology() -> Terminology:
    if not _source:
        raise NotSupportedError("This server has no terminology source configured")
    return _source[0]


def _params(req: FhirRequest) -> dict[str, Any]:
    """Return the operation's parameters from the query and a Parameters body (coding parts unpacked)."""
    out: dict[str, Any] = dict(req.params)
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if not isinstance(p, dict) or "name" not in p:
                continue
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            out[p["name"]] = value
    for name in ("coding", "sourceCoding"):
        coding = out.get(name)
        if isinstance(coding, dict):
            out.setdefault("system", coding.get("system"))
            out.setdefault("code", coding.get("code"))
    return out


def _required(params: dict[str, Any], *names: str) -> list[str]:
    values = []
    for name in names:
        value = params.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRequestError(
                f"Parameter {name!r} is required", expression=(name,), message_id="MSG_PARAM_INVALID"
            )
        values.append(value)
    return values


@register("CodeSystem", "lookup", instance=False)
def lookup(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Answer CodeSystem/$lookup for our codes and the standard codes we send."""
    ctx.require("CodeSystem", "r")
    system, code = _required(_params(req), "system", "code")
    found = _terminology().lookup(system, code)
    if found is None:
        raise NotFoundError(f"Code {code!r} is not known in {system}", expression=("code",))
    parameters: list[dict[str, Any]] = [
        {"name": "name", "valueString": found["name"]},
        {"name": "display", "valueString": found["display"]},
    ]
    if "version" in found:
        parameters.insert(1, {"name": "version", "valueString": found["version"]})
    for prop in found["property"]:
        value = {k: v for k, v in prop.items() if k.startswith("value")}
        parameters.append(
            {
                "name": "property",
                "part": [{"name": "code", "valueCode": prop["code"]}, {"name": "value", **value}],
            }
        )
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parameters}, dict(_JSON))


def _translate(ctx: AccessContext, req: FhirRequest, id_: str | None) -> FhirResponse:
    ctx.require("ConceptMap", "r")
    params = _params(req)
    url = params.get("url") or params.get("conceptMap")
    concept_map_url = _terminology().concept_map_url
    if (id_ is not None and id_ != "pt-measures-to-standard") or (url and url != concept_map_url):
        raise NotFoundError(f"Unknown ConceptMap {id_ or url}; this server translates with {concept_map_url}")
    system, code = _required(params, "system", "code")
    target = params.get("targetsystem") or params.get("targetSystem")
    matches = _terminology().translate(system, code, target if isinstance(target, str) else None)
    parameters: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(matches)}]
    if not matches:
        parameters.append({"name": "message", "valueString": f"No mapping for {system}|{code}"})
    for m in matches:
        parameters.append(
            {
                "name": "match",
                "part": [
                    {"name": "equivalence", "valueCode": m["equivalence"]},
                    {"name": "concept", "valueCoding": m["concept"]},
                    {"name": "source", "valueUri": concept_map_url},
                ],
            }
        )
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parameters}, dict(_JSON))


@register("ConceptMap", "translate", instance=False)
def translate(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Answer ConceptMap/$translate (ours -> LOINC/SNOMED and back)."""
    return _translate(ctx, req, None)


@register("ConceptMap", "translate", instance=True)
def translate_instance(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Answer ConceptMap/pt-measures-to-standard/$translate."""
    return _translate(ctx, req, id_)


def _same(stored: str | None, resource: dict[str, Any]) -> bool:
    if stored is None:
        return False
    body = orjson.loads(stored)
    body.pop("meta", None)
    return bool(body == resource)


def seed(repo: FhirRepository, ctx: AccessContext, req: FhirRequest) -> list[str]:
    """Store every terminology resource that is missing or changed; return what was written."""
    return store_missing(repo, ctx, req, _terminology().resources())


def store_missing(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, resources: list[dict[str, Any]]
) -> list[str]:
    """PUT each resource (fixed id) that is missing or changed; return what was written."""
    written = []
    for resource in resources:
        type_, id_ = resource["resourceType"], resource["id"]
        stored = repo.read_resource(type_, id_)
        if stored is not None and not stored.deleted and _same(stored.body, resource):
            continue
        update(repo, ctx, req, type_, id_, body=resource)
        written.append(f"{type_}/{id_}")
    return written
